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
    from lockdock.installer.lockfile import read_lock
    from lockdock.spec import load_project

    artifacts: list[LockedArtifact] = []
    for flavor in load_project(project_root).select(flavors):
        if not flavor.lock_path.is_file():
            raise StaleLockError(
                f"Flavor {flavor.name} has no lock at {flavor.lock_path}: run `lockdock lock`."
            )
        artifacts += lock_artifacts(read_lock(flavor.lock_path), platforms)
    return artifacts
