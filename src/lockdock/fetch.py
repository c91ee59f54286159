"""``lockdock fetch``: every artifact of a project's flavor locks into the store.

The store itself (layout, verification, downloads) is the installer's
(``lockdock.installer.store``), because image builds need it without lockdock's other
dependencies; this module is the project-level step around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lockdock.installer.lockfile import LockedArtifact
from lockdock.installer.store import lock_artifacts


def project_artifacts(
    project_root: Path, flavors: Sequence[str] = (), platforms: Sequence[str] = ()
) -> list[LockedArtifact]:
    """Every artifact of the named flavors' locks (all flavors when none is named)."""
    from lockdock.errors import StaleLockError
    from lockdock.installer.lockfile import lock_exists, read_lock
    from lockdock.spec import load_project

    artifacts: list[LockedArtifact] = []
    for flavor in load_project(project_root).select(flavors):
        if not lock_exists(flavor.lock_path):
            raise StaleLockError(
                f"Flavor {flavor.name} has no lock at {flavor.lock_path}: run `lockdock lock`."
            )
        artifacts += lock_artifacts(read_lock(flavor.lock_path), platforms)
    return artifacts


def build_locked_sdists(artifacts: Sequence[LockedArtifact], store: Path) -> int:
    """After the downloads: build every locked pip sdist into a wheel once (lockdock.sdist).

    Returns how many sdists the lock pins (built now or before)."""
    from lockdock.sdist import build_sdists

    return len(build_sdists(artifacts, store))


def require_built(artifacts: Sequence[LockedArtifact], store: Path) -> None:
    """``fetch --check``: IntegrityError listing every locked sdist with no built wheel."""
    from lockdock.errors import IntegrityError
    from lockdock.installer.store import list_missing
    from lockdock.sdist import unbuilt

    missing = unbuilt(artifacts, store)
    if missing:
        raise IntegrityError(
            f"{len(missing)} locked pip sdist(s) have no wheel built in store {store} (run "
            f"`lockdock fetch`: it builds pure-Python sdists once):\n{list_missing(missing)}"
        )
