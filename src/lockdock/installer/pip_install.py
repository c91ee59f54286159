"""The pip part of an install: the locked wheels (hash-checked in the store) into the new
prefix by ``lockdock.installer.wheel_install`` (pip's layout, extracted and byte-compiled in
parallel with the prefix's own interpreter, checked-hash ``.pyc`` files that depend on the
source only); distributions the lock no longer names are removed with the prefix's pip.
Part of the installer: standard library only.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lockdock.errors import InstallError
from lockdock.installer.lockfile import LockedArtifact
from lockdock.installer.prefix import canonical_pip_name, pip_versions_match, read_prefix
from lockdock.installer.store import artifact_path
from lockdock.installer.wheel_install import install_wheels
from lockdock.progress import say

DEFAULT_SOURCE_DATE_EPOCH = "0"


def prefix_python(prefix: Path) -> Path | None:
    for name in ("bin/python", "bin/python3", "python.exe"):
        candidate = prefix / name
        if candidate.exists():
            return candidate
    return None


def interpreter_env(source_date_epoch: str | None = None) -> dict[str, str]:
    """Environment for running the prefix's interpreter: no user/site config, no pip config,
    no stray bytecode, deterministic pyc (``SOURCE_DATE_EPOCH`` -> checked-hash)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "PYTHON", "CONDA_", "VIRTUAL_ENV"))
    }
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_CACHE_DIR="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
        SOURCE_DATE_EPOCH=source_date_epoch
        or os.environ.get("SOURCE_DATE_EPOCH")
        or DEFAULT_SOURCE_DATE_EPOCH,
    )
    return env


def _run_python(python: Path, args: Sequence[str], what: str) -> None:
    proc = subprocess.run(
        [str(python), *args], env=interpreter_env(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise InstallError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def install_pip(pip_artifacts: Sequence[LockedArtifact], prefix: Path, store: Path,
                pyc_cache: Path | None = None) -> None:  # fmt: skip
    python = prefix_python(prefix)
    if python is None:
        raise InstallError(
            f"The lock pins {len(pip_artifacts)} pip package(s) but its conda part put no "
            f"Python interpreter into {prefix} (no bin/python): lock `python`."
        )
    installed = read_prefix(prefix).pip
    locked = {canonical_pip_name(a.name): a for a in pip_artifacts}
    stale = sorted(
        name
        for name, version in installed.items()
        if name not in locked or not pip_versions_match(locked[name].version, version)
    )
    if stale:
        say(f"pip: removing {len(stale)} distribution(s) not in the lock: {', '.join(stale)}")
        _run_python(
            python, ["-m", "pip", "uninstall", "--yes", *stale], f"pip uninstall in {prefix}"
        )
    wanted = [a for name, a in sorted(locked.items()) if name in stale or name not in installed]
    if not wanted:
        return
    say(f"installing {len(wanted)} wheel(s): extracting and byte-compiling in parallel")
    paths = {artifact_path(store, a): a.sha256 for a in wanted}
    install_wheels(list(paths), prefix, python, interpreter_env(), pyc_cache=pyc_cache,
                   sha256={path: sha for path, sha in paths.items() if sha})  # fmt: skip
