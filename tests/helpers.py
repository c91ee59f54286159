"""Helpers every test tier shares: one way to run the CLI, one lock-entry factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockdock.cli import main
from lockdock.installer.lockfile import LockedArtifact


def run_cli(*args: str | Path, project: Path | None = None) -> int:
    """``lockdock [-C project] ARGS`` in this process; its exit code (0 on success)."""
    argv = [*(["-C", str(project)] if project is not None else []), *map(str, args)]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return int(exited.value.code or 0)


def entry(
    name: str,
    version: str,
    manager: str = "conda",
    *,
    build: str = "h0_0",
    platform: str = "linux-64",
    url: str | None = None,
    sha256: str | None = None,
    categories: frozenset[str] = frozenset({"main"}),
) -> LockedArtifact:
    """A lock entry as lockdock reads one (conda URLs carry ``name-version-build.conda``)."""
    if url is None:
        url = (f"https://conda.anaconda.org/conda-forge/{platform}/{name}-{version}-{build}.conda"
               if manager == "conda"
               else f"https://files.example/{name}-{version}-py3-none-any.whl")  # fmt: skip
    return LockedArtifact(name=name, version=version, manager=manager, platform=platform,
                          url=url, sha256=sha256, md5=None, categories=categories)  # fmt: skip
