"""Wheels built from locked sdists: where the store keeps them and how the installer finds them.

A lock may pin a pip *source* distribution (``MIDIUtil-1.2.1.tar.gz``). ``lockdock fetch``
builds it once into a wheel (``lockdock.sdist``: isolated, hash-pinned build requirements,
``SOURCE_DATE_EPOCH``), stores the wheel content-addressed like any artifact
(``sha256/<wheel hex>/<wheel name>``) and records it against the sdist's sha256::

    <store>/built/<sdist sha256>.json
    {"schema": 1, "sdist": {"name", "version", "filename", "sha256"},
     "wheel": {"filename", "sha256"}, "build": {"python", "backend", "requirements",
     "source_date_epoch"}}

The installer (offline, inside image builds) installs that wheel in the sdist's place, after
re-hashing it; it never builds. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockdock.errors import InstallError, IntegrityError
from lockdock.installer.lockfile import LockedArtifact

BUILT_DIR = "built"
SCHEMA = 1
WHEEL_SUFFIX = ".whl"
#: The scheme of a built wheel's stand-in URL (it was never downloaded from anywhere).
BUILT_SCHEME = "lockdock-built"


def is_sdist(artifact: LockedArtifact) -> bool:
    return artifact.manager == "pip" and not artifact.filename.endswith(WHEEL_SUFFIX)


def record_path(store: Path, sdist_sha256: str) -> Path:
    return Path(store) / BUILT_DIR / f"{sdist_sha256.lower()}.json"


@dataclass(frozen=True)
class BuiltWheel:
    sdist: LockedArtifact
    wheel_filename: str
    wheel_sha256: str
    build: dict[str, Any]

    @property
    def artifact(self) -> LockedArtifact:
        """The wheel as a store entry (``sha256/<hex>/<name>``) standing in for the sdist."""
        return LockedArtifact(
            name=self.sdist.name, version=self.sdist.version, manager="pip",
            platform=self.sdist.platform, url=f"{BUILT_SCHEME}:///{self.wheel_filename}",
            sha256=self.wheel_sha256, md5=None, categories=self.sdist.categories,
            dependencies=self.sdist.dependencies,
        )  # fmt: skip

    def to_json(self) -> str:
        data = {
            "schema": SCHEMA,
            "sdist": {
                "name": self.sdist.name, "version": self.sdist.version,
                "filename": self.sdist.filename, "sha256": self.sdist.sha256,
            },
            "wheel": {"filename": self.wheel_filename, "sha256": self.wheel_sha256},
            "build": self.build,
        }  # fmt: skip
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def read_built(store: Path, sdist: LockedArtifact) -> BuiltWheel | None:
    """The wheel recorded for ``sdist`` in ``store``, or None when it was never built."""
    path = record_path(store, sdist.sha256 or "")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        wheel = data["wheel"]
        if data.get("schema") != SCHEMA or data["sdist"]["sha256"] != sdist.sha256:
            raise ValueError("schema or sdist hash differs")
        filename, sha256 = str(wheel["filename"]), str(wheel["sha256"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise IntegrityError(
            f"{path} (the wheel built from {sdist.filename}) is unreadable: {error}. Delete "
            "it and run `lockdock fetch` to build the sdist again."
        ) from None
    if "/" in filename or not filename.endswith(WHEEL_SUFFIX):
        raise IntegrityError(f"{path}: {filename!r} is not a wheel file name.")
    return BuiltWheel(sdist, filename, sha256, dict(data.get("build") or {}))


def wheels_for_install(
    pip: list[LockedArtifact], store: Path, lock_path: Path
) -> list[LockedArtifact]:
    """``pip`` with every sdist replaced by the wheel built from it (InstallError if none)."""
    result: list[LockedArtifact] = []
    unbuilt: list[str] = []
    for artifact in pip:
        if not is_sdist(artifact):
            result.append(artifact)
            continue
        built = read_built(store, artifact)
        if built is None:
            unbuilt.append(f"{artifact.name} {artifact.version} ({artifact.filename})")
            continue
        result.append(built.artifact)
    if unbuilt:
        raise InstallError(
            f"Lock {lock_path} pins pip source distribution(s) with no wheel built in store "
            f"{store}: {', '.join(unbuilt)}. The installer builds nothing: run `lockdock "
            "fetch` first (it builds pure-Python sdists once, reproducibly), or lock a "
            "wheel (a wheel index, or the conda package)."
        )
    return result


def store_entries(artifacts: Iterable[LockedArtifact], store: Path) -> set[str]:
    """Relative store paths an install of ``artifacts`` reads: each artifact's, plus for each
    sdist with a built wheel that wheel and its record (what an image's store context holds)."""
    from lockdock.installer.store import relative_path

    wanted: set[str] = set()
    for artifact in artifacts:
        wanted.add(relative_path(artifact))
        built = read_built(store, artifact) if is_sdist(artifact) else None
        if built is not None:
            wanted.add(relative_path(built.artifact))
            wanted.add(f"{BUILT_DIR}/{(artifact.sha256 or '').lower()}.json")
    return wanted


def unbuilt_sdists(
    artifacts: Iterable[LockedArtifact], store: Path, present: frozenset[str] | set[str]
) -> list[LockedArtifact]:
    """The locked sdists the store holds (``present``: its inventory) but not the wheel built
    from them: no record of one, or a record whose wheel file is gone."""
    from lockdock.installer.store import relative_path

    unbuilt = []
    for artifact in artifacts:
        if is_sdist(artifact) and relative_path(artifact) in present:
            built = read_built(store, artifact)
            if built is None or relative_path(built.artifact) not in present:
                unbuilt.append(artifact)
    return unbuilt
