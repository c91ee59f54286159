"""Inputs and checks for installer tests and benchmarks: hand-made locks, wheels, tree digests.

``write_lock`` writes a conda-lock file through conda-lock's own models for artifacts that
are already on disk (a package built into a local channel, a wheel pip downloaded), pinned by
URL + sha256 (+ md5 for conda). ``tree_manifest`` describes every file, symlink and folder of
a tree by content, so two prefixes can be compared byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lockdock.fsutil import file_digests

#: The local CPU wheel of torch that pip's configuration (find-links) offers on test machines.
TORCH_REQUIREMENT = "torch==2.13.0"


@dataclass(frozen=True)
class Entry:
    """One artifact to lock: a local file and the URL the lock names for it."""

    path: Path
    url: str
    manager: str  # "conda" | "pip"
    name: str
    version: str
    categories: frozenset[str] = field(default_factory=lambda: frozenset({"main"}))


def conda_entry(path: Path, url: str | None = None, categories: Iterable[str] = ("main",)) -> Entry:
    """A conda package file ``name-version-build.(conda|tar.bz2)``."""
    stem = path.name.removesuffix(".conda").removesuffix(".tar.bz2")
    name, version, _build = stem.rsplit("-", 2)
    uri = url or path.resolve().as_uri()
    return Entry(path, uri, "conda", name, version, frozenset(categories))


def wheel_entry(path: Path, url: str | None = None, categories: Iterable[str] = ("main",)) -> Entry:
    """A wheel ``name-version-...whl`` (name as its METADATA spells it is not needed)."""
    name, version = path.name.split("-")[:2]
    return Entry(path, url or path.resolve().as_uri(), "pip", name, version, frozenset(categories))


def write_lock(
    lock_path: Path,
    entries: Sequence[Entry],
    *,
    platforms: Sequence[str] = ("linux-64",),
    channels: Sequence[str] = ("file:///nonexistent-channel",),
) -> Path:
    """A conda-lock.yml (conda-lock's models) pinning ``entries`` for every platform given."""
    from conda_lock.lockfile import write_conda_lock_file
    from conda_lock.lockfile.v1.models import HashModel
    from conda_lock.lockfile.v2prelim.models import LockedDependency, Lockfile, LockMeta
    from conda_lock.models.channel import Channel

    packages = []
    for platform in platforms:
        for entry in entries:
            digests = file_digests(entry.path, ("sha256", "md5"))
            hashes = HashModel(
                sha256=digests["sha256"],
                md5=digests["md5"] if entry.manager == "conda" else None,
            )
            packages.append(
                LockedDependency(
                    name=entry.name,
                    version=entry.version,
                    manager=entry.manager,
                    platform=platform,
                    dependencies={},
                    url=entry.url,
                    hash=hashes,
                    categories=set(entry.categories),
                )
            )
    lockfile = Lockfile(
        package=packages,
        metadata=LockMeta(
            content_hash={p: "handwritten-for-tests" for p in platforms},
            channels=[Channel.from_string(c) for c in channels],
            platforms=list(platforms),
            sources=["environment.yml"],
        ),
    )
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    write_conda_lock_file(lockfile, lock_path, metadata_choices=None, include_help_text=False)
    return lock_path


def download_wheels(dest: Path, requirements: Sequence[str], *, deps: bool) -> list[Path]:
    """``pip download`` wheels (pip's own configuration applies: find-links, indexes)."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "-d", str(dest)]
    if not deps:
        command.append("--no-deps")
    proc = subprocess.run([*command, *requirements], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download {' '.join(requirements)} failed:\n{proc.stderr}")
    return sorted(dest.glob("*.whl"))


def tree_manifest(root: Path) -> dict[str, str]:
    """Relative path -> content description for every entry under ``root``.

    Files: sha256 + permission bits; symlinks: their target; folders: ``dir``. Timestamps
    are not content (and BuildKit rewrites them in images anyway).
    """
    manifest: dict[str, str] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory) / name
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                manifest[rel] = f"symlink -> {os.readlink(path)}"
            elif stat.S_ISDIR(info.st_mode):
                manifest[rel] = "dir"
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                manifest[rel] = f"{digest} {stat.S_IMODE(info.st_mode):o}"
    return manifest


def manifest_difference(a: dict[str, str], b: dict[str, str], limit: int = 20) -> list[str]:
    """Human-readable differences between two manifests (at most ``limit`` lines)."""
    lines = [
        f"{key}: {a.get(key, '<absent>')} != {b.get(key, '<absent>')}"
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]
    return lines[:limit]


def decompress_artifacts(artifacts: Sequence[Path], dest: Path) -> None:
    """Merely unpack ``artifacts`` into ``dest/0``, ``dest/1``, ... in one thread, the floor the
    benchmarks compare an install with: conda archives with py-rattler's extractor (what the
    installer itself uses), wheels with ``zipfile``. No prefix, no compile, no verification."""
    import zipfile

    from rattler.package_streaming import extract

    for index, artifact in enumerate(artifacts):
        target = dest / str(index)
        if artifact.name.endswith(".whl"):
            with zipfile.ZipFile(artifact) as archive:
                archive.extractall(target)
        else:
            extract(artifact, target)


def make_wheel(
    dest: Path,
    name: str,
    version: str,
    modules: dict[str, str],
    *,
    console_scripts: dict[str, str] | None = None,
) -> Path:
    """A small pure-Python wheel built with the standard library (no network, fixed bytes).

    ``modules`` maps file paths inside the wheel (``pkg/__init__.py``) to their text;
    ``console_scripts`` maps a script name to ``module:function``.
    """
    import zipfile

    from lockdock.installer.wheel_install import record_hash

    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    files: dict[str, bytes] = {path: text.encode() for path, text in sorted(modules.items())}
    files[f"{dist}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: lockdock test\n"
    ).encode()
    files[f"{dist}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: lockdock.testing\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    if console_scripts:
        lines = "".join(f"{k} = {v}\n" for k, v in sorted(console_scripts.items()))
        files[f"{dist}/entry_points.txt"] = f"[console_scripts]\n{lines}".encode()
    record = []
    for path, data in files.items():
        record.append(f"{path},{record_hash(data)},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return wheel
