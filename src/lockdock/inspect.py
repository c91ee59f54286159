"""``lockdock inspect FLAVOR [--against REF]``: what the image ships, layer by layer.

Per environment layer slot: the packages it holds (the split report the builder wrote into
the image, ``lockdock.installer.layer_plan.REPORT_PATH``), its installed bytes, its
compressed bytes where a registry manifest tells them, and — against a previously built or
published image — whether a machine that has that image already has the layer, and how many
bytes it must pull to update (the sum over the layers it lacks, by diff ID).

Pure: ``layer_rows``, ``render_table``, ``update_summary``. Edges (the Docker CLI):
``image_layers``, ``shipped_report``, ``inspect_command``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockdock.errors import EngineError, UsageError
from lockdock.installer.layer_plan import REPORT_PATH, SHARED_SLOT, SLOTS, slot_dir

#: Layers of the final stage after the slots: the lock file and the SBOM.
TRAILING_LAYERS = 2


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


# --- edges (the Docker CLI) -----------------------------------------------------------------


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


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


def image_layers(reference: str, *, sizes: bool = False) -> ImageLayers:
    """Diff IDs of a local image (``sizes``: with compressed sizes from ``docker save``),
    else of a registry image (with compressed sizes from its manifest)."""
    local = _docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", reference)
    if local.returncode == 0:
        diff_ids = tuple(json.loads(local.stdout))
        return ImageLayers(reference, diff_ids, saved_sizes(reference) if sizes else {})
    config = _docker("buildx", "imagetools", "inspect", reference, "--format",
                     '{{json .Image}}')  # fmt: skip
    raw = _docker("buildx", "imagetools", "inspect", reference, "--raw")
    if config.returncode or raw.returncode:
        raise EngineError(
            f"{reference} is neither a local image nor readable from its registry: "
            f"{(config.stderr or raw.stderr).strip()[-300:]}"
        )
    image, manifest = json.loads(config.stdout), json.loads(raw.stdout)
    if "manifests" in manifest:  # an index: take the manifest of the config's platform
        image = image.get("linux/amd64", image) if "rootfs" not in image else image
        digest = next(m["digest"] for m in manifest["manifests"]
                      if m.get("platform", {}).get("architecture") == image.get("architecture"))
        raw = _docker("buildx", "imagetools", "inspect", f"{reference.split('@')[0]}@{digest}",
                      "--raw")  # fmt: skip
        manifest = json.loads(raw.stdout)
    diff_ids = tuple(image["rootfs"]["diff_ids"])
    compressed = {d: int(layer["size"])
                  for d, layer in zip(diff_ids, manifest["layers"], strict=True)}
    return ImageLayers(reference, diff_ids, compressed)


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


def table_for(reference: str, against: str | None = None) -> list[str]:
    """The markdown table of a local image, optionally against another image."""
    image = image_layers(reference, sizes=True)
    other = image_layers(against) if against else None
    return render_table(layer_rows(shipped_report(reference), image, other), against)


def inspect_command(project_dir: Path, flavor: str, *, platform: str | None = None,
                    against: str | None = None) -> str:
    """What ``lockdock inspect`` prints: the flavor's last build (its build record)."""
    from lockdock.context import resolve_flavor

    context = resolve_flavor(project_dir, flavor, platform)
    record = context.workspace.read_build_record(flavor, context.platform)
    if record is None:
        raise UsageError(f"Flavor {flavor} has no build record for {context.platform}: run "
                         f"`lockdock build {flavor}` first.")
    lines = [f"### {flavor}: {record.reference}", "", *table_for(record.reference, against)]
    return "\n".join(lines) + "\n"
