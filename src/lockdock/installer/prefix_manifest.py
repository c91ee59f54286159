"""A prefix as a list and as one hash: ``walk`` (every entry's lstat) and
``prefix_manifest_sha256`` (every path, kind, mode, file sha256 and symlink target).

The splitter records the manifest of the verified prefix in its report; the image's
environment is later checked byte for byte against it
(``python -m lockdock.installer.layers --manifest-of PREFIX``).
Standard library only (it runs in the installer venv).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from lockdock.fsutil import sha256_file

#: (files and symlinks, directories): relative posix path -> lstat.
Walked = tuple[dict[str, os.stat_result], dict[str, os.stat_result]]
T = TypeVar("T")
R = TypeVar("R")


def walk(prefix: Path) -> Walked:
    """Every entry under ``prefix``. Plain strings, not Path objects: a torch prefix has
    24,000 entries."""
    entries: dict[str, os.stat_result] = {}
    directories: dict[str, os.stat_result] = {}
    top = os.fspath(prefix)
    cut = len(top.rstrip("/")) + 1
    for directory, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            (directories if stat.S_ISDIR(info.st_mode) else entries)[path[cut:]] = info
    return entries, directories


def in_batches(items: list[T], action: Callable[[T], R], jobs: int) -> list[R]:
    """``action`` of every item over ``jobs`` threads, in batches (24,000 futures cost more
    than the small files they stand for); results in order. For I/O and hashlib, which
    release the GIL."""
    batches = [items[i : i + 256] for i in range(0, len(items), 256)]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = pool.map(lambda batch: [action(item) for item in batch], batches)
        return [result for batch in done for result in batch]


def manifest_lines(prefix: Path, walked: Walked, *, jobs: int = 4) -> dict[str, str]:
    """Path -> its manifest line: ``file <mode> <sha256>``, ``symlink <target>``,
    ``dir <mode>``."""
    entries, directories = walked
    top = os.fspath(prefix)

    def line(rel: str) -> str:
        info = entries[rel]
        path = os.path.join(top, rel)
        if stat.S_ISLNK(info.st_mode):
            return f"symlink {os.readlink(path)}"
        return f"file {stat.S_IMODE(info.st_mode):o} {sha256_file(Path(path))}"

    files = sorted(entries)
    described = dict(zip(files, in_batches(files, line, jobs), strict=True))
    for rel, info in directories.items():
        described[rel] = f"dir {stat.S_IMODE(info.st_mode):o}"
    return described


def manifest_sha256(described: dict[str, str]) -> str:
    total = hashlib.sha256()
    for rel in sorted(described):
        total.update(f"{rel}\0{described[rel]}\n".encode("utf-8", "surrogateescape"))
    return total.hexdigest()


def prefix_manifest_sha256(prefix: Path, *, jobs: int = 4) -> str:
    """sha256 of the prefix's canonical manifest (``manifest_lines``)."""
    return manifest_sha256(manifest_lines(prefix, walk(prefix), jobs=jobs))
