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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: (files and symlinks, directories): relative posix path -> lstat.
Walked = tuple[dict[str, os.stat_result], dict[str, os.stat_result]]


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


def prefix_manifest_sha256(prefix: Path, *, jobs: int = 4, walked: Walked | None = None) -> str:
    """sha256 of the prefix's canonical manifest. ``walked``: a ``walk(prefix)`` already made."""
    entries, directories = walked or walk(prefix)
    top = os.fspath(prefix)

    def digest(rel: str) -> str:
        info = entries[rel]
        path = os.path.join(top, rel)
        if stat.S_ISLNK(info.st_mode):
            return f"symlink {os.readlink(path)}"
        content = hashlib.sha256()
        with open(path, "rb") as handle:  # not file_digest: the base may be 3.10
            for block in iter(lambda: handle.read(1 << 20), b""):
                content.update(block)
        return f"file {stat.S_IMODE(info.st_mode):o} {content.hexdigest()}"

    def digests(batch: list[str]) -> list[str]:
        return [digest(rel) for rel in batch]

    files = sorted(entries)
    batches = [files[i : i + 256] for i in range(0, len(files), 256)]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # hashlib releases the GIL
        described = dict(zip(files, (d for b in pool.map(digests, batches) for d in b),
                             strict=True))  # fmt: skip
    for rel, info in directories.items():
        described[rel] = f"dir {stat.S_IMODE(info.st_mode):o}"
    total = hashlib.sha256()
    for rel in sorted(described):
        total.update(f"{rel}\0{described[rel]}\n".encode("utf-8", "surrogateescape"))
    return total.hexdigest()
