"""Publishing, planned purely: which images may go out, under which tags, dated how, and
the record that says what went out. ``lockdock.publish`` does the pushing.

Tags, in push order (``lockdock.tags.publish_tags``):

1. content-addressed ``<flavor>-<lockhash12>``: the first 12 hex digits of the SHA-256 of
   the lock file's bytes. It names one lock, so it never has to move.
2. descriptive ``<flavor>-py3.12-torch2.5-cu12.6-<YYYYMMDD>``: the versions the image holds
   (``lockdock.facts.descriptor``, the same as the build's) and the publish date.
3. moving: the flavor's ``moving-tags`` (flavor.toml).

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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockdock.accelerators import Accelerator
from lockdock.errors import PublishRefusedError, SpecError, UsageError
from lockdock.facts import IMAGE_CATEGORIES, LOCK_SHA256_LABEL, descriptor, lock_versions
from lockdock.installer.lockfile import Lock
from lockdock.platform import Platform
from lockdock.registry import ImageRef
from lockdock.tags import Tags, arch_tag, publish_tags
from lockdock.textio import source_date_epoch
from lockdock.workspace import Workspace


@dataclass(frozen=True)
class LocalImage:
    """A built image in the local engine, as publish needs to know it."""

    platform: str  # docker platform: linux/amd64
    reference: str  # how the engine finds it (tag or id)
    digest: str  # the engine's image id (with the containerd store: the manifest digest)
    created: str | None = None  # RFC 3339 from the image config
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishPlan:
    flavor: str
    repository: ImageRef
    lock_path: Path
    lock_hash: str
    date: str
    images: tuple[LocalImage, ...]
    tags: Tags
    gate_reports: Mapping[str, Path]  # platform -> gate.json
    platform_only: bool = False  # push each platform under its <content tag>-<arch> only

    @property
    def multi_platform(self) -> bool:
        return len(self.images) > 1

    def platform_tag(self, image: LocalImage) -> str:
        """The tag one platform's image is pushed under."""
        if not self.multi_platform and not self.platform_only:
            return self.tags.content_addressed
        return arch_tag(self.tags.content_addressed, Platform.image(image.platform))


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
    epoch = source_date_epoch(env_epoch or "")  # the one parser: digits, up to year 9999
    if epoch is not None:
        return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y%m%d")
    return recorded or today


def plan_publish(
    *,
    flavor: str,
    accelerator: Accelerator,
    moving_tags: Sequence[str],
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
    platforms = [Platform.image(i.platform).subdir for i in images]
    first = next((p for p in platforms if p in lock.platforms), None)
    if first is None:
        raise SpecError(
            f"Lock {lock.path} has none of the platforms being published "
            f"({', '.join(i.platform for i in images)})."
        )
    versions = lock_versions(lock.select(first, list(IMAGE_CATEGORIES)))
    date = publish_date([i.created for i in images], env_epoch, recorded_date, today)
    return PublishPlan(
        flavor=flavor,
        repository=repository,
        lock_path=lock.path,
        lock_hash=lock_hash,
        date=date,
        images=tuple(sorted(images, key=lambda i: i.platform)),
        tags=publish_tags(flavor, lock_hash, descriptor(versions, accelerator), date,
                          tuple(moving_tags)),
        gate_reports={p: reports[p][0] for p in sorted(reports)},
    )


def publication_record(
    plan: PublishPlan, digest: str, platform_digests: Mapping[str, str], root: Path,
    revision: str | None = None,
) -> dict[str, Any]:
    """The images.lock.json record; ``revision``: the project's git commit (recorded here
    and in the attestations, not in the image, whose digest it would change)."""
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
        **({"revision": revision} if revision else {}),
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
    """The date ``existing`` (read, so type-checked, by ``Workspace.read_images_lock``)
    records for these image ids in this repository; None when it records none."""
    wanted = set(digests)
    for record in (existing or {}).get("images", []):
        if (record.get("flavor"), record.get("repository")) != (flavor, repository):
            continue
        ids = {p.get("image_id") for p in record.get("platforms", {}).values()}
        if ids == wanted:
            return record.get("date") or None
    return None
