"""One flavor, resolved once per command: project, lock bytes, hash, versions, platform.

Commands that act on a flavor's image (build, verify-repro, test, publish, inspect) call
``resolve_flavor`` once and pass the result down, so a command reads the project and the lock
once and hashes the lock once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from lockdock.accelerators import Accelerator, accelerator
from lockdock.errors import StaleLockError
from lockdock.facts import IMAGE_CATEGORIES, LockVersions, descriptor, lock_versions
from lockdock.installer.lockfile import (
    Lock,
    LockedArtifact,
    lock_exists,
    parse_lock,
    read_lock_bytes,
)
from lockdock.platform import Platform
from lockdock.spec import Flavor, Project, load_project
from lockdock.workspace import Workspace


@dataclass(frozen=True)
class FlavorContext:
    project: Project
    flavor: Flavor
    accelerator: Accelerator
    lock: Lock
    lock_sha256: str
    platform: Platform
    #: The lock's entries an image of this platform is built from.
    artifacts: tuple[LockedArtifact, ...]
    versions: LockVersions

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.project.root)

    @property
    def descriptor(self) -> str:
        return descriptor(self.versions, self.accelerator)

    @property
    def lock_relative(self) -> Path:
        return self.flavor.lock_path.relative_to(self.project.root)


def context_of(
    project: Project, flavor: Flavor, lock: Lock, lock_sha256: str, platform: Platform
) -> FlavorContext:
    """Pure: the context from what was read."""
    artifacts = tuple(lock.select(platform.subdir, list(IMAGE_CATEGORIES)))
    return FlavorContext(
        project=project,
        flavor=flavor,
        accelerator=accelerator(flavor.accelerator, source=str(flavor.directory / "flavor.toml")),
        lock=lock,
        lock_sha256=lock_sha256,
        platform=platform,
        artifacts=artifacts,
        versions=lock_versions(artifacts),
    )


def resolve_flavor(
    project_dir: Path | str, flavor_name: str, platform: str | Platform | None = None,
    *, project: Project | None = None,
) -> FlavorContext:
    """Read the project (unless given) and the flavor's lock, once."""
    from lockdock.engine import native_platform

    project = project or load_project(project_dir)
    flavor = project.one(flavor_name)
    chosen = platform if isinstance(platform, Platform) else (
        Platform.image(platform) if platform else native_platform())
    if not lock_exists(flavor.lock_path):
        raise StaleLockError(
            f"Flavor {flavor.name} has no lock at {flavor.lock_path}: run `lockdock lock`."
        )
    raw = read_lock_bytes(flavor.lock_path)  # read once: hashed and parsed from these bytes
    lock = parse_lock(raw, flavor.lock_path)
    return context_of(project, flavor, lock, hashlib.sha256(raw).hexdigest(), chosen)
