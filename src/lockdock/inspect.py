"""``lockdock inspect FLAVOR [--against REF]``: what the image ships, layer by layer.

Per environment layer slot: the packages it holds (the split report the builder wrote into
the image, ``lockdock.installer.layer_plan.REPORT_PATH``), its installed bytes, its
compressed bytes where a registry manifest tells them, and — against a previously built or
published image — whether a machine that has that image already has the layer, and how many
bytes it must pull to update (the sum over the layers it lacks, by diff ID).

Pure: ``layer_rows``, ``render_table``, ``update_summary``, and the checks of what a registry
sent (``platform_manifest``, ``registry_image``). Edges (the Docker CLI): ``image_layers``,
``shipped_report``, ``inspect_command``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockdock.errors import EngineError, RegistryError, UsageError
from lockdock.installer.layer_plan import REPORT_PATH, SHARED_SLOT, SLOTS, slot_dir
from lockdock.registry import is_digest, parse_reference

#: Layers of the final stage after the slots: the lock file and the SBOM.
TRAILING_LAYERS = 2
#: The image an index stands for when the caller names no platform.
DEFAULT_PLATFORM = "linux/amd64"
IMAGE_CONFIG_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)


@dataclass(frozen=True)
class ImageLayers:
    reference: str
    diff_ids: tuple[str, ...]
    #: Compressed size per diff ID, where a registry manifest gave it (local images: none).
    compressed: Mapping[str, int]


@dataclass(frozen=True)
class LayerRow:
    slot: str  # "00".."55", or "base" / "lock+sbom"
    packages: tuple[str, ...]
    installed_bytes: int | None
    compressed_bytes: int | None
    diff_id: str
    #: None: no --against image; else whether that image has this layer.
    shared: bool | None


def first_slot_layer(layer_count: int) -> int:
    """Index of slot 00 among an image's layers: the base's come first, the lock file's and
    the SBOM's (``TRAILING_LAYERS``) last."""
    return layer_count - SLOTS - TRAILING_LAYERS


def _package(entry: Mapping[str, Any]) -> str:
    return f"{entry['name']} {entry['version']}"


def layer_rows(
    report: Mapping[str, Any], image: ImageLayers, against: ImageLayers | None = None
) -> list[LayerRow]:
    """One row per layer of ``image``: base layers summed into one row, then every slot,
    then the lock file and SBOM layers. Pure."""
    slots = list(report["slots"])
    if len(slots) != SLOTS or len(image.diff_ids) < SLOTS + TRAILING_LAYERS:
        raise UsageError(
            f"{image.reference} was not split into {SLOTS} layer slots (its split report "
            f"has {len(slots)}, the image {len(image.diff_ids)} layers): build it with this "
            "lockdock."
        )
    have = set(against.diff_ids) if against else None
    first_slot = first_slot_layer(len(image.diff_ids))

    def row(slot: str, packages: Sequence[str], installed: int | None, diff_id: str) -> LayerRow:
        return LayerRow(slot, tuple(packages), installed, image.compressed.get(diff_id),
                        diff_id, None if have is None else diff_id in have)

    rows = [row("base", [], None, d) for d in image.diff_ids[:first_slot]]
    for entry, diff_id in zip(slots, image.diff_ids[first_slot:first_slot + SLOTS],
                              strict=True):  # fmt: skip
        rows.append(row(str(entry["slot"]), [_package(p) for p in entry["packages"]],
                        int(entry["installed_bytes"]), diff_id))  # fmt: skip
    rows += [row("lock+sbom", [], None, d) for d in image.diff_ids[first_slot + SLOTS:]]
    return rows


@dataclass(frozen=True)
class UpdateSummary:
    layers: int  # layers the --against machine lacks
    installed_bytes: int  # their installed bytes (slots only)
    compressed_bytes: int | None  # what it pulls; None when a size is unknown


def update_summary(rows: Sequence[LayerRow]) -> UpdateSummary:
    missing = [r for r in rows if r.shared is False]
    sizes = [r.compressed_bytes for r in missing]
    return UpdateSummary(
        len(missing),
        sum(r.installed_bytes or 0 for r in missing),
        None if any(s is None for s in sizes) else sum(s or 0 for s in sizes),
    )


def _mb(value: int | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1e6:.1f} MB" if value >= 100_000 else f"{value / 1e3:.1f} kB"


def render_table(rows: Sequence[LayerRow], against: str | None = None) -> list[str]:
    """Markdown lines: the slot table (empty slots left out, base layers in one row) and,
    with ``against``, what a machine that has that image pulls to update."""
    header = "| layer | packages | installed | compressed |" + (" shared |" if against else "")
    lines = [header, "|---|---|---:|---:|" + ("---|" if against else "")]
    base = [r for r in rows if r.slot == "base"]
    shown = [r for r in rows if r.slot != "base" and (r.packages or r.slot == slot_dir(SHARED_SLOT)
                                                      or r.slot == "lock+sbom")]
    if base:
        known = [r.compressed_bytes for r in base]
        compressed = None if None in known else sum(k or 0 for k in known)
        shared = "" if not against else (
            " yes |" if all(r.shared for r in base) else f" {sum(1 for r in base if r.shared)}"
            f"/{len(base)} |")
        lines.append(f"| base ({len(base)} layers) | | | {_mb(compressed)} |{shared}")
    for r in shown:
        names = ", ".join(r.packages[:6]) + (f" +{len(r.packages) - 6}" if len(r.packages) > 6
                                             else "")  # fmt: skip
        shared = "" if not against else (" yes |" if r.shared else " **no** |")
        lines.append(f"| {r.slot} | {names} | {_mb(r.installed_bytes)} | "
                     f"{_mb(r.compressed_bytes)} |{shared}")
    if against:
        summary = update_summary(rows)
        pulled = ("unknown (push the image or pass a registry reference for the compressed "
                  "sizes)" if summary.compressed_bytes is None else _mb(summary.compressed_bytes))
        lines += ["", f"Against {against}: {summary.layers} layer(s) to pull, "
                  f"{pulled} compressed ({_mb(summary.installed_bytes)} installed)."]
    return lines


# --- what a registry sent (pure) -----------------------------------------------------------


def check_against(against: str) -> str:
    """``--against``: an image reference (``parse_reference``), else UsageError naming it."""
    try:
        if str(parse_reference(against)) != against:
            raise UsageError("it has surrounding spaces.")
    except UsageError as error:
        raise UsageError(f"--against {against!r} is not an image reference: {error.message} "
                         "Pass a local image or a registry reference "
                         "([registry/]name[:tag][@sha256:digest]).") from None
    return against


def _not_comparable(reference: str, why: str) -> RegistryError:
    return RegistryError(f"{reference} is not an image whose layers can be compared: {why}. "
                         "--against takes a container image (local, or a registry tag or "
                         "digest of one).")


def _json(reference: str, text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise _not_comparable(reference, f"its {what} is not JSON ({text.strip()[:80]!r})"
                              ) from None


def _diff_ids(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(is_digest(d) for d in value):
        return tuple(value)
    return None


def platform_manifest(reference: str, index: Any, platform: str) -> str:
    """The digest of ``platform``'s (``os/arch``) image in the index ``index``."""
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list):
        raise _not_comparable(reference, "its index has no list of manifests")
    wanted = tuple(platform.split("/")[:2])
    listed = []
    for entry in manifests:
        where = entry.get("platform") if isinstance(entry, dict) else None
        if not isinstance(where, dict):
            continue
        listed.append(f"{where.get('os')}/{where.get('architecture')}")
        digest = entry.get("digest")
        if (where.get("os"), where.get("architecture")) == wanted and is_digest(digest):
            return str(digest)
    raise _not_comparable(reference, f"it is an index with no {platform} image (it lists "
                                     f"{', '.join(listed) or 'none'})")


def registry_image(reference: str, manifest: Any, config: Any) -> ImageLayers:
    """The layers of a registry image from its manifest and image config (as JSON values):
    RegistryError unless they are a container image's, with one diff ID per layer."""
    if not isinstance(manifest, dict) or "manifests" in manifest:
        raise _not_comparable(reference, "its manifest is not an image manifest")
    descriptor = manifest.get("config")
    media = descriptor.get("mediaType") if isinstance(descriptor, dict) else None
    if manifest.get("artifactType") or media not in IMAGE_CONFIG_TYPES:
        kind = manifest.get("artifactType") or media
        raise _not_comparable(reference, f"it is an artifact ({kind}), not a container "
                                         "image: its config is not an image config")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(
        isinstance(layer, dict) and type(layer.get("size")) is int and layer["size"] >= 0
        for layer in layers
    ):
        raise _not_comparable(reference, "its manifest's layers are not descriptors with sizes")
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = _diff_ids(rootfs.get("diff_ids") if isinstance(rootfs, dict) else None)
    if diff_ids is None:
        raise _not_comparable(reference, "its image config has no rootfs.diff_ids (the "
                                         "digests of its layers)")
    if len(diff_ids) != len(layers):
        raise _not_comparable(reference, f"its image config lists {len(diff_ids)} layer(s), "
                                         f"its manifest {len(layers)}")
    return ImageLayers(reference, diff_ids,
                       {d: int(layer["size"]) for d, layer in zip(diff_ids, layers, strict=True)})


# --- edges (the Docker CLI) -----------------------------------------------------------------


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise EngineError("The docker client is not installed: inspect reads images through "
                          "it.") from None


def saved_sizes(reference: str) -> dict[str, int]:
    """Compressed size per diff ID of a local image, from ``docker save`` (the containerd
    image store keeps the compressed blobs; the stream is read once, only JSON kept)."""
    import tarfile

    small: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    with subprocess.Popen(["docker", "save", reference], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as proc:  # fmt: skip
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                digest = "sha256:" + member.name.rsplit("/", 1)[-1]
                sizes[digest] = member.size
                if member.size < 1 << 20:
                    handle = archive.extractfile(member)
                    small[member.name if "/" not in member.name else digest] = (
                        handle.read() if handle else b"")
    try:
        index = json.loads(small["index.json"])
        manifest = json.loads(small[index["manifests"][0]["digest"]])
        while "manifests" in manifest:  # an index inside: its first (the platform's) manifest
            manifest = json.loads(small[manifest["manifests"][0]["digest"]])
        config = json.loads(small[manifest["config"]["digest"]])
    except (KeyError, ValueError, IndexError):
        return {}
    layers = [layer["digest"] for layer in manifest["layers"]]
    return {d: sizes[b] for d, b in zip(config["rootfs"]["diff_ids"], layers, strict=False)
            if b in sizes}  # fmt: skip


def local_layers(reference: str, *, sizes: bool = False) -> ImageLayers | None:
    """Diff IDs of a local image (``sizes``: with compressed sizes from ``docker save``);
    None when the engine has no such image."""
    local = _docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", reference)
    if local.returncode != 0:
        if "no such image" in local.stderr.lower():
            return None
        raise EngineError(f"The Docker engine could not inspect {reference}: "
                          f"{local.stderr.strip()[-300:]}")
    diff_ids = _diff_ids(_json(reference, local.stdout, "layer list"))
    if diff_ids is None:
        raise EngineError(f"The Docker engine lists no layers for {reference} "
                          f"({local.stdout.strip()[:200]!r}).")
    return ImageLayers(reference, diff_ids, saved_sizes(reference) if sizes else {})


def _imagetools(reference: str, *args: str, target: str | None = None) -> str:
    """``docker buildx imagetools inspect`` of ``target`` (default: ``reference``, the one
    the user named, which the error names)."""
    proc = _docker("buildx", "imagetools", "inspect", target or reference, *args)
    if proc.returncode != 0:
        part = f" (its manifest {target})" if target else ""
        raise RegistryError(
            f"{reference} is neither a local image nor readable from its registry{part}: "
            f"{proc.stderr.strip()[-300:]}"
        )
    return proc.stdout


def registry_layers(reference: str, platform: str = DEFAULT_PLATFORM) -> ImageLayers:
    """Diff IDs and compressed sizes of a registry image (an index: its ``platform`` image)."""
    manifest = _json(reference, _imagetools(reference, "--raw"), "manifest")
    target = None
    if isinstance(manifest, dict) and "manifests" in manifest:
        target = f"{parse_reference(reference).name}@"
        target += platform_manifest(reference, manifest, platform)
        manifest = _json(reference, _imagetools(reference, "--raw", target=target), "manifest")
    config = _json(reference, _imagetools(reference, "--format", "{{json .Image}}",
                                          target=target), "config")  # fmt: skip
    return registry_image(reference, manifest, config)


def image_layers(reference: str, *, sizes: bool = False,
                 platform: str = DEFAULT_PLATFORM) -> ImageLayers:
    """A local image's layers, else a registry image's (see ``local_layers``,
    ``registry_layers``)."""
    return local_layers(reference, sizes=sizes) or registry_layers(reference, platform)


def shipped_report(reference: str) -> dict[str, Any]:
    """The split report inside a local image."""
    proc = _docker("run", "--rm", "--network=none", "--entrypoint", "cat", reference,
                   f"/{REPORT_PATH}")  # fmt: skip
    if proc.returncode != 0:
        raise UsageError(
            f"{reference} has no layer split report (/{REPORT_PATH}): it was built before "
            f"layers by package, or is not a lockdock image. {proc.stderr.strip()[-200:]}"
        )
    return dict(json.loads(proc.stdout))


def table_for(reference: str, against: str | None = None, *,
              platform: str = DEFAULT_PLATFORM, missing: str | None = None) -> list[str]:
    """The markdown table of a local image, optionally against another image (local, else
    from its registry; an index: its ``platform`` image). ``missing``: the message when the
    engine has no ``reference``."""
    if against is not None:
        check_against(against)
    image = local_layers(reference, sizes=True)
    if image is None:
        raise UsageError(missing or f"{reference} is not an image in the engine: inspect reads "
                         "a local image (its layer split report and its layers).")
    other = image_layers(against, platform=platform) if against is not None else None
    return render_table(layer_rows(shipped_report(reference), image, other), against)


def inspect_command(project_dir: Path, flavor: str, *, platform: str | None = None,
                    against: str | None = None) -> str:
    """What ``lockdock inspect`` prints: the flavor's last build (its build record)."""
    from lockdock import engine
    from lockdock.context import resolve_flavor

    context = resolve_flavor(project_dir, flavor, platform)
    record = context.workspace.read_build_record(flavor, context.platform)
    if record is None:
        raise UsageError(f"Flavor {flavor} has no build record for {context.platform}: run "
                         f"`lockdock build {flavor}` first.")
    if against is not None:
        check_against(against)
    engine.check_engine()
    missing = (f"The last build of {flavor} for {context.platform}, {record.reference} (its "
               "build record), is no longer in the engine (removed or pruned): rebuild it "
               f"with `lockdock build {flavor}`.")
    table = table_for(record.reference, against, platform=str(context.platform.docker),
                      missing=missing)
    lines = [f"### {flavor}: {record.reference}", "", *table]
    return "\n".join(lines) + "\n"
