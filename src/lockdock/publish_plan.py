"""Publishing, planned purely: which images may go out, under which tags, dated how, and
the record that says what went out. ``lockdock.publish`` does the pushing.

Tags, in push order (``plan_tags``):

1. content-addressed ``<flavor>-<lockhash12>``: the first 12 hex digits of the SHA-256 of
   the lock file's bytes. It names one lock, so it never has to move.
2. descriptive ``<flavor>-py3.12-torch2.5-cu12.6-<YYYYMMDD>``, read from the lock (python,
   torch, CUDA where the lock has it) and the publish date.
3. moving ``<flavor>``, plus ``latest`` for ``cpu``.

Publishing is refused (PublishRefusedError, ``gate_refusal``) unless the image's gate report
(``Workspace.gate_path``) exists for its exact digest, names the same flavor and platform,
and says ``passed: true``; and unless the image was built from the lock being published.

The date of the descriptive tag must not change between a failed run and its rerun, or the
rerun would push a second descriptive tag. It is, in order (``publish_date``): the image's
creation time (the reproducible build derives it from SOURCE_DATE_EPOCH, so it is a property
of the digest) when it is a real date (after 2000); else ``SOURCE_DATE_EPOCH`` from the
environment; else the date ``images.lock.json`` already records for this same digest
(``recorded_date``); else today (UTC), which is then recorded. (Only that last fallback can
differ between a failed run and a rerun on another day, and only for images without a build
date, e.g. ``docker import``-ed ones.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockdock.errors import PublishRefusedError, SpecError, UsageError
from lockdock.image import LOCK_SHA256_LABEL  # where the build records sha256(lock file)
from lockdock.installer.lockfile import Lock, LockedArtifact
from lockdock.registry import ImageRef
from lockdock.workspace import Workspace

DOCKER_TO_CONDA = {"linux/amd64": "linux-64", "linux/arm64": "linux-aarch64"}
_ARCH = {"linux/amd64": "amd64", "linux/arm64": "arm64"}


@dataclass(frozen=True)
class LocalImage:
    """A built image in the local engine, as publish needs to know it."""

    platform: str  # docker platform: linux/amd64
    reference: str  # how the engine finds it (tag or id)
    digest: str  # the engine's image id (with the containerd store: the manifest digest)
    created: str | None = None  # RFC 3339 from the image config
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TagPlan:
    content_addressed: str
    descriptive: tuple[str, ...]
    moving: tuple[str, ...]

    @property
    def in_order(self) -> tuple[str, ...]:
        return (self.content_addressed, *self.descriptive, *self.moving)


@dataclass(frozen=True)
class PublishPlan:
    flavor: str
    repository: ImageRef
    lock_path: Path
    lock_hash: str
    date: str
    images: tuple[LocalImage, ...]
    tags: TagPlan
    gate_reports: Mapping[str, Path]  # platform -> gate.json
    platform_only: bool = False  # push each platform under its <content tag>-<arch> only

    @property
    def multi_platform(self) -> bool:
        return len(self.images) > 1

    def platform_tag(self, image: LocalImage) -> str:
        """The tag one platform's image is pushed under."""
        if not self.multi_platform and not self.platform_only:
            return self.tags.content_addressed
        return arch_tag(self.tags.content_addressed, image.platform)


def arch_tag(content_tag: str, platform: str) -> str:
    return f"{content_tag}-{_ARCH.get(platform, platform.replace('/', '-'))}"


def gate_refusal(report: Mapping[str, Any] | None, path: Path, flavor: str,
                 image: LocalImage) -> str | None:
    """Why ``image`` may not be published given its gate report, or None when it may."""
    if report is None:
        return (
            f"no gate report for image {image.digest} ({flavor}, {image.platform}): {path} "
            f"does not exist. Run `lockdock test {flavor}` first."
        )
    if report.get("image_digest") != image.digest:
        return (
            f"gate report {path} is for image {report.get('image_digest')!r}, not for "
            f"{image.digest}: the image changed since it was gated."
        )
    if report.get("flavor") not in (None, flavor):
        return f"gate report {path} is for flavor {report.get('flavor')!r}, not {flavor!r}."
    if report.get("platform") not in (None, image.platform):
        return (
            f"gate report {path} is for platform {report.get('platform')!r}, "
            f"not {image.platform!r}."
        )
    if report.get("passed") is not True:
        return f"the gates failed for image {image.digest} ({path} says passed: false)."
    return None


def _major_minor(version: str) -> str:
    parts = re.split(r"[.+]", version)
    return ".".join(parts[:2]) if len(parts) >= 2 else version


def lock_descriptor(artifacts: Iterable[LockedArtifact]) -> str:
    """``py3.12-torch2.5-cu12.6`` from the versions locked for one platform.

    Python from conda's ``python``; torch from conda's ``pytorch`` or pip's ``torch``. The
    CUDA part names the CUDA torch was built for, not whichever CUDA libraries something else
    pulled in: none for a CPU torch (conda build string ``cpu_*``, pip local version
    ``+cpu``); else conda-forge's ``cuda-version`` metapackage, ``cuda-cudart``, or pip's
    ``nvidia-cuda-runtime-cu1x``. Parts the lock does not have are left out.
    """
    by_name: dict[str, LockedArtifact] = {}
    for artifact in artifacts:
        by_name.setdefault(artifact.name.lower(), artifact)

    def version(*names: str) -> str | None:
        return next((by_name[n].version for n in names if n in by_name), None)

    parts = []
    python = version("python")
    if python:
        parts.append(f"py{_major_minor(python)}")
    torch = by_name.get("pytorch") or by_name.get("torch")
    if torch:
        parts.append(f"torch{_major_minor(torch.version)}")
    cpu_torch = torch is not None and (
        (torch.build or "").startswith("cpu") or torch.version.endswith("+cpu")
    )
    cuda = None if cpu_torch else version("cuda-version", "cuda-cudart")
    if cuda is None and not cpu_torch:
        cuda = next((a.version for n, a in sorted(by_name.items())
                     if n.startswith("nvidia-cuda-runtime-cu")), None)
    if cuda:
        parts.append(f"cu{_major_minor(cuda)}")
    return "-".join(parts)


def _tag_safe(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", text)[:128]


def plan_tags(flavor: str, lock_hash: str, descriptor: str, date: str) -> TagPlan:
    descriptive = "-".join(p for p in (flavor, descriptor, date) if p)
    moving = (flavor, "latest") if flavor == "cpu" else (flavor,)
    return TagPlan(
        content_addressed=_tag_safe(f"{flavor}-{lock_hash[:12]}"),
        descriptive=(_tag_safe(descriptive),),
        moving=tuple(_tag_safe(t) for t in moving),
    )


def publish_date(
    created: Sequence[str | None], env_epoch: str | None, recorded: str | None, today: str
) -> str:
    """The descriptive tag's date, YYYYMMDD (see the module docstring for the order)."""
    for stamp in created:
        if stamp:
            try:
                when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                continue
            if when.year > 2000:
                return when.astimezone(UTC).strftime("%Y%m%d")
    if env_epoch:
        try:
            return datetime.fromtimestamp(int(env_epoch), tz=UTC).strftime("%Y%m%d")
        except ValueError:
            raise UsageError(f"SOURCE_DATE_EPOCH={env_epoch!r} is not a number of seconds.") \
                from None
    return recorded or today


def plan_publish(
    *,
    flavor: str,
    repository: ImageRef,
    lock: Lock,
    lock_hash: str,
    images: Sequence[LocalImage],
    reports: Mapping[str, tuple[Path, Mapping[str, Any] | None]],
    recorded_date: str | None,
    env_epoch: str | None,
    today: str,
) -> PublishPlan:
    """The whole publication, or PublishRefusedError naming each image's missing gate."""
    if not images:
        raise UsageError(f"No image of flavor {flavor!r} to publish: run `lockdock build` first.")
    if repository.tag or repository.digest:
        raise UsageError(
            f"--registry {repository} names a tag or digest: give the repository only "
            "(REGISTRY/NAME); lockdock chooses the tags."
        )
    refusals = []
    for image in images:
        path, report = reports[image.platform]
        reason = gate_refusal(report, path, flavor, image)
        if reason:
            refusals.append(reason)
        built_from = image.labels.get(LOCK_SHA256_LABEL)
        if built_from and built_from != lock_hash:
            refusals.append(
                f"image {image.digest} ({image.platform}) was built from a lock with SHA-256 "
                f"{built_from[:12]}…, not from {lock.path} ({lock_hash[:12]}…): its "
                "content-addressed tag would name the wrong lock. Rebuild it."
            )
    if refusals:
        raise PublishRefusedError(
            f"Refusing to publish {flavor} to {repository.name}: " + " ".join(refusals)
        )
    platforms = [DOCKER_TO_CONDA.get(i.platform, i.platform) for i in images]
    first = next((p for p in platforms if p in lock.platforms), None)
    if first is None:
        raise SpecError(
            f"Lock {lock.path} has none of the platforms being published "
            f"({', '.join(i.platform for i in images)})."
        )
    descriptor = lock_descriptor(lock.select(first, sorted(lock.categories)))
    date = publish_date([i.created for i in images], env_epoch, recorded_date, today)
    return PublishPlan(
        flavor=flavor,
        repository=repository,
        lock_path=lock.path,
        lock_hash=lock_hash,
        date=date,
        images=tuple(sorted(images, key=lambda i: i.platform)),
        tags=plan_tags(flavor, lock_hash, descriptor, date),
        gate_reports={p: reports[p][0] for p in sorted(reports)},
    )


def publication_record(
    plan: PublishPlan, digest: str, platform_digests: Mapping[str, str], root: Path
) -> dict[str, Any]:
    rel = Workspace(root).relative
    return {
        "flavor": plan.flavor,
        "repository": plan.repository.name,
        "digest": digest,
        "reference": f"{plan.repository.name}:{plan.tags.content_addressed}@{digest}",
        "tags": list(plan.tags.in_order),
        "lock": rel(plan.lock_path),
        "lock_hash": plan.lock_hash,
        "date": plan.date,
        "platforms": {
            image.platform: {
                "digest": platform_digests[image.platform],
                "image_id": image.digest,
                "tag": plan.platform_tag(image),
                "gate_report": rel(plan.gate_reports[image.platform]),
            }
            for image in plan.images
        },
    }


def recorded_date(existing: Mapping[str, Any] | None, flavor: str, repository: str,
                  digests: Iterable[str]) -> str | None:
    wanted = set(digests)
    for record in (existing or {}).get("images", []):
        if (record.get("flavor"), record.get("repository")) != (flavor, repository):
            continue
        ids = {p.get("image_id") for p in record.get("platforms", {}).values()}
        if ids == wanted:
            return str(record.get("date")) or None
    return None
