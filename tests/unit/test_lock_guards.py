"""Guard of ``lock --check``: a platform dropped from ``platforms:`` makes the lock stale
(the lock still carries it, so an image for it would be built from a lock that no longer
matches its inputs). On a real conda-lock file (tests/data, larsnet-midi)."""

from __future__ import annotations

import shutil
from pathlib import Path

from lockdock.lock import check_locks
from lockdock.spec import load_project
from lockdock.testing.flavors import write_flavor
from tests.data import REALDATA
from tests.unit.test_lock import CONDA_LOCK_DEFAULT_LINUX


def _project(root: Path, platforms: list[str]) -> Path:
    source = REALDATA / "larsnet-midi"
    env = (source / "environment.yml").read_text(encoding="utf-8")
    listed = "".join(f"  - {p}\n" for p in platforms)
    (root / "environment.yml").write_text(f"{env}\nplatforms:\n{listed}", encoding="utf-8")
    shutil.copy(source / "conda-lock.yml", root / "conda-lock.yml")
    flavor = root / "images" / "cpu"
    if not flavor.is_dir():
        write_flavor(root / "images", "cpu")
    (flavor / "virtual-packages.yml").write_text(CONDA_LOCK_DEFAULT_LINUX)
    return root


def test_a_platform_removed_from_platforms_is_stale(tmp_path: Path) -> None:
    project = load_project(_project(tmp_path, ["linux-64", "linux-aarch64"]))
    assert check_locks(project) == []  # the control: both platforms listed, both fresh
    project = load_project(_project(tmp_path, ["linux-64"]))
    stale = check_locks(project)
    assert [(s.flavor, s.platform, s.reason) for s in stale] == [
        ("cpu", "linux-aarch64", "no longer in `platforms:`")
    ]
