"""Image facts: the label keys, the image layout, and the versions a lock pins.

Build writes these labels, the gates and publish read them; every key is defined here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lockdock.accelerators import Accelerator, major_minor, runtimes, torch_of
from lockdock.installer.lockfile import LockedArtifact

#: Where the locked environment lives in every image (a conda env of the base's conda).
ENV_PREFIX = "/opt/conda/envs/lockdock"
IMAGE_PYTHON = f"{ENV_PREFIX}/bin/python"
#: The image's non-root user (uid 1000).
IMAGE_USER = "lockdock"
#: The lock categories an image is built from (and that its tags and labels describe).
IMAGE_CATEGORIES = ("main",)

LABEL_PREFIX = "io.lockdock"
FLAVOR_LABEL = f"{LABEL_PREFIX}.flavor"
ACCELERATOR_LABEL = f"{LABEL_PREFIX}.accelerator"
PLATFORM_LABEL = f"{LABEL_PREFIX}.platform"
LOCK_HASH_LABEL = f"{LABEL_PREFIX}.lock.content-hash"
LOCK_SHA256_LABEL = f"{LABEL_PREFIX}.lock.sha256"
PYTHON_LABEL = f"{LABEL_PREFIX}.python.version"
TORCH_LABEL = f"{LABEL_PREFIX}.pytorch.version"
OCI = "org.opencontainers.image"
#: An absent version is labelled this (so a label's absence means "not built by lockdock").
ABSENT = "none"


def runtime_label(runtime: str) -> str:
    """``io.lockdock.cuda.version``: one label per accelerator runtime lockdock knows."""
    return f"{LABEL_PREFIX}.{runtime}.version"


@dataclass(frozen=True)
class LockVersions:
    """What one platform's lock pins: Python, PyTorch, and each accelerator runtime found."""

    python: str | None
    torch: str | None
    #: ``{runtime: major.minor}`` for every runtime the lock carries (``{"cuda": "13.0"}``).
    runtimes: Mapping[str, str] = field(default_factory=dict)

    def runtime(self, accelerator: Accelerator) -> str | None:
        return self.runtimes.get(accelerator.runtime) if accelerator.runtime else None


def packages_by_name(artifacts: Iterable[LockedArtifact]) -> dict[str, LockedArtifact]:
    by_name: dict[str, LockedArtifact] = {}
    for artifact in artifacts:
        by_name.setdefault(artifact.name.lower(), artifact)
    return by_name


def lock_versions(artifacts: Iterable[LockedArtifact]) -> LockVersions:
    """Python from conda's ``python``; PyTorch from conda's ``pytorch`` or pip's ``torch``;
    each runtime as its accelerator class reads it (lockdock.accelerators)."""
    packages = packages_by_name(artifacts)
    python = packages.get("python")
    torch = torch_of(packages)
    found = {}
    for kind in runtimes():
        version = kind.runtime_version(packages)
        if version and kind.runtime:
            found[kind.runtime] = version
    return LockVersions(
        python=python.version if python else None,
        torch=torch.version if torch else None,
        runtimes=found,
    )


def descriptor(versions: LockVersions, accelerator: Accelerator) -> str:
    """``py3.11-torch2.13-cu13.0``: the versions a person looks for in a tag."""
    parts = []
    if versions.python:
        parts.append(f"py{major_minor(versions.python)}")
    if versions.torch:
        parts.append(f"torch{major_minor(versions.torch)}")
    for kind in runtimes():
        part = kind.tag_part(versions.runtime(kind))
        if part:
            parts.append(part)
    return "-".join(parts)


def version_labels(versions: LockVersions) -> dict[str, str]:
    """The Python, PyTorch and per-runtime version labels (``none`` when absent)."""
    labels = {
        PYTHON_LABEL: versions.python or ABSENT,
        TORCH_LABEL: versions.torch or ABSENT,
    }
    for kind in runtimes():
        version = versions.runtime(kind)
        labels[runtime_label(str(kind.runtime))] = version or ABSENT
        labels.update(kind.labels(version))
    return labels


def version_label_problems(versions: LockVersions, labels: Mapping[str, str]) -> list[str]:
    """Each version label of an image that disagrees with the lock it was built from."""
    problems = []
    for key, want in version_labels(versions).items():
        said = labels.get(key)
        if said is None or not key.endswith(".version"):
            continue
        if key not in (PYTHON_LABEL, TORCH_LABEL) and said != ABSENT:
            said = major_minor(said)
        if said != want:
            problems.append(f"image label {key}={labels.get(key)!r} but the lock says {want!r}")
    return problems


def oci_created(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
