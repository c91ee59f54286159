"""``lockdock verify-repro``: two ``--no-cache`` builds into OCI layouts, compared per
platform; when they differ, the config fields and layer files that differ are named.

Both builds install into an emptied prefix and compile every pyc; the build ``lockdock build``
recorded may have used the builder's kept prefix and pyc cache. So when that record is of the
same lock, base image and builder, the fresh digest must also be the recorded one: a cache
that drifted from a fresh install fails here (exit 12) instead of shipping unnoticed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockdock.buildopts import DEFAULT_COMPRESSION, with_compression
from lockdock.context import FlavorContext
from lockdock.engine import run_buildx
from lockdock.errors import ReproducibilityError
from lockdock.image.plan import BuildPlan, buildx_argv, oci_output
from lockdock.image.stage import prepare_build, stage_sbom
from lockdock.progress import say
from lockdock.workspace import BuildRecord


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexdigest

def _json_blob(layout: Path, digest: str) -> Any:
    return json.loads(blob_path(layout, digest).read_text(encoding="utf-8"))

def platform_manifests(layout: Path) -> dict[str, str]:
    """``{"linux/amd64": "sha256:..."}`` for every image manifest in an OCI layout."""
    found: dict[str, str] = {}

    def walk(descriptors: Iterable[Mapping[str, Any]], platform: str | None) -> None:
        for desc in descriptors:
            media = str(desc.get("mediaType", ""))
            plat = desc.get("platform") or {}
            here = f"{plat['os']}/{plat['architecture']}" if plat else platform
            if media.endswith("image.index.v1+json") or media.endswith("manifest.list.v2+json"):
                walk(_json_blob(layout, desc["digest"]).get("manifests", []), here)
            else:
                if here is None:
                    manifest = _json_blob(layout, desc["digest"])
                    config = _json_blob(layout, manifest["config"]["digest"])
                    here = f"{config.get('os')}/{config.get('architecture')}"
                if here != "unknown/unknown":  # attestation manifests
                    found[here] = str(desc["digest"])

    index = json.loads((layout / "index.json").read_text(encoding="utf-8"))
    walk(index.get("manifests", []), None)
    return found

def _members(path: Path) -> dict[str, str]:
    """Layer tar member -> description (type, mode, owner, mtime, content digest or target)."""
    out: dict[str, str] = {}
    with tarfile.open(path, mode="r:*") as archive:
        for member in archive:
            if member.isfile():
                handle = archive.extractfile(member)
                digest = hashlib.sha256(handle.read() if handle else b"").hexdigest()[:16]
                what = f"file sha256:{digest}"
            elif member.issym() or member.islnk():
                what = f"link -> {member.linkname}"
            else:
                what = f"type {member.type!r}"
            out[member.name] = (
                f"{what} mode {member.mode:o} uid {member.uid} gid {member.gid} "
                f"mtime {member.mtime}"
            )
    return out

def diff_members(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    return [
        f"{name}: {a.get(name, '<absent>')} != {b.get(name, '<absent>')}"
        for name in sorted(set(a) | set(b))
        if a.get(name) != b.get(name)
    ]

def explain_difference(layout_a: Path, layout_b: Path, manifest_a: str, manifest_b: str,
                       limit: int = 30) -> list[str]:
    """Lines naming what differs between two image manifests: config fields, layer files."""
    lines: list[str] = []
    man_a, man_b = _json_blob(layout_a, manifest_a), _json_blob(layout_b, manifest_b)
    if man_a["config"]["digest"] != man_b["config"]["digest"]:
        conf_a = _json_blob(layout_a, man_a["config"]["digest"])
        conf_b = _json_blob(layout_b, man_b["config"]["digest"])
        for key in sorted(set(conf_a) | set(conf_b)):
            if key != "rootfs" and conf_a.get(key) != conf_b.get(key):
                lines.append(f"image config field {key!r} differs")
    layers_a, layers_b = man_a.get("layers", []), man_b.get("layers", [])
    if len(layers_a) != len(layers_b):
        lines.append(f"layer count differs: {len(layers_a)} != {len(layers_b)}")
    for number, (la, lb) in enumerate(zip(layers_a, layers_b, strict=False), start=1):
        if la["digest"] == lb["digest"]:
            continue
        differences = diff_members(
            _members(blob_path(layout_a, la["digest"])), _members(blob_path(layout_b, lb["digest"]))
        )
        if not differences:
            differences = ["(same files; the archive bytes or compression differ)"]
        lines.append(f"layer {number} ({la['digest'][:19]} != {lb['digest'][:19]}):")
        lines += [f"  {line}" for line in differences]
    return lines[:limit]


def comparable_record(record: BuildRecord | None, plan: BuildPlan) -> BuildRecord | str:
    """``record`` when a fresh build of ``plan`` must give its digest; otherwise why not."""
    if record is None:
        return f"no build of {plan.flavor} ({plan.platform}) is recorded"
    if record.compression is None:
        return f"the build record of {record.reference} predates compression being recorded"
    if record.lock_sha256 != plan.lock_sha256:
        return f"the recorded build {record.reference} is of another lock"
    if record.base_image != plan.base_image:
        return (f"the recorded build {record.reference} used another base image "
                f"({record.base_image or 'the default'})")
    if record.builder != plan.builder:
        return (f"the recorded build {record.reference} used another builder "
                f"({record.builder or 'the current one'})")
    return record


def recorded_build_problem(record: BuildRecord, fresh: str | None) -> str | None:
    """Why the recorded build is not the image two fresh builds gave (None: it is)."""
    if fresh == record.digest:
        return None
    return (
        f"Two --no-cache builds of {record.flavor} ({record.platform}) agree on {fresh}, but "
        f"the build lockdock recorded, {record.reference}, is {record.digest}: that build "
        "reused a builder cache that no longer matches a fresh install (the kept prefix or "
        "the pyc cache, README \"Layers\"). Drop them with `docker buildx prune --filter "
        f"type=exec.cachemount`, rebuild with `lockdock build {record.flavor} --force`, and "
        "do not publish the earlier image"
    )


@dataclass(frozen=True)
class ReproResult:
    flavor: str
    digests: tuple[Mapping[str, str], Mapping[str, str]]
    differences: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return self.digests[0] == self.digests[1] and bool(self.digests[0])


def verify_repro(
    context: FlavorContext,
    *,
    base_image: str | None = None,
    builder: str | None = None,
    store: Path | None = None,
    keep: Path | None = None,
) -> ReproResult:
    """Build twice from scratch (``--no-cache``) and compare per-platform manifest digests.

    ReproducibilityError naming the differing files when they differ. ``keep``: leave the two
    OCI layouts there (for inspection) instead of a temporary folder.
    """
    plan = prepare_build(context, base_image=base_image, builder=builder, store=store)
    recorded = comparable_record(
        context.workspace.read_build_record(plan.flavor, plan.platform), plan)
    compression = (recorded.compression if isinstance(recorded, BuildRecord)
                   else None) or DEFAULT_COMPRESSION
    with contextlib.ExitStack() as stack:
        work = keep or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="lockdock-repro."))
        )
        layouts = []
        for attempt in ("a", "b"):
            layout = work / f"build-{attempt}"
            shutil.rmtree(layout, ignore_errors=True)
            if attempt == "b":  # written anew, later: its layer must not carry the time
                stage_sbom(context, plan.epoch, plan.sbom_context)
            output = with_compression(
                oci_output(layout, rewrite_timestamps=plan.rewrite_timestamps), compression)
            argv = buildx_argv(plan, output=output, metadata_file=work / f"metadata-{attempt}.json",
                               no_cache=True, compile_all=True)
            say(f"verify-repro: build {attempt} of {plan.flavor} ({plan.platform}), --no-cache")
            run_buildx(argv, f"Reproducibility build {attempt} of {plan.flavor}")
            layouts.append(layout)
        first, second = platform_manifests(layouts[0]), platform_manifests(layouts[1])
        differences: list[str] = []
        for plat in sorted(set(first) | set(second)):
            if first.get(plat) != second.get(plat):
                differences.append(f"{plat}: {first.get(plat)} != {second.get(plat)}")
                if plat in first and plat in second:
                    differences += explain_difference(
                        layouts[0], layouts[1], first[plat], second[plat]
                    )
        result = ReproResult(plan.flavor, (first, second), tuple(differences))
    for plat, digest in sorted(first.items()):
        say(f"verify-repro {plan.flavor} {plat}: {digest} / {second.get(plat)}")
    if not result.identical:
        raise ReproducibilityError(
            f"Two --no-cache builds of {plan.flavor} ({plan.platform}) differ:\n"
            + "\n".join(differences)
        )
    say(f"verify-repro {plan.flavor}: identical")
    if isinstance(recorded, BuildRecord):
        problem = recorded_build_problem(recorded, first.get(plan.platform))
        if problem:
            raise ReproducibilityError(problem + ".")
        say(f"verify-repro {plan.flavor}: the recorded build {recorded.reference} is that image")
    else:
        say(f"verify-repro {plan.flavor}: not compared with a recorded build: {recorded}")
    return result
