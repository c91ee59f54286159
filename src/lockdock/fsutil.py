"""File-system helpers shared by every step. Standard library only (runs in image builds)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lockdock.errors import LocalFileError


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[str]]:
    """Write ``path`` through a temp file in the same directory and ``os.replace`` it.

    On any exception the temp file is removed and ``path`` is left as it was. The result keeps
    the mode of the file it replaces, else gets the umask's default (mkstemp's 0600 would make
    locks and SBOMs unreadable to other users, e.g. a container's non-root user). A symlink
    is written through: the file it points at changes, the link stays a link. A device, pipe
    or socket in its place (``/dev/null``, ``/dev/stdout`` into a pipe) is refused
    (``refuse_special``): the rename would replace it with a regular file.
    """
    refuse_special(path)
    if path.is_symlink():
        path = path.resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise local_file_error(path, error, "write") from None
    try:
        os.chmod(tmp, _target_mode(path))
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError) and not isinstance(error, LocalFileError):
            raise local_file_error(path, error, "write") from None
        raise


_SPECIAL_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def special_file_kind(path: Path | str) -> str | None:
    """What ``path`` (through links) is when it exists but is neither a regular file nor a
    directory: "a character device", "a pipe (FIFO)"...; None otherwise."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), None)


def refuse_special(path: Path | str) -> None:
    """LocalFileError when ``path`` is a device, pipe or socket: writing through a temp file
    renamed into place would replace it (as root, ``-o /dev/null`` would turn /dev/null into
    a regular file), and writing into it directly would not be atomic."""
    kind = special_file_kind(path)
    if kind is not None:
        raise LocalFileError(
            f"Could not write {path}: it is {kind}, not a regular file; lockdock writes "
            "files through a temp file renamed into place, which would replace it. Name a "
            "regular file (new or existing) instead."
        )


def _target_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)  # type: ignore[arg-type]


def file_digests(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, reading the file once."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def sha256_file(path: Path) -> str:
    return file_digests(path)["sha256"]


def probe_writable(path: Path) -> None:
    """Raise the OSError that writing ``path`` would meet, before the work that ends in the
    write: a directory in its place, a file where its nearest existing folder should be, a
    folder that refuses new files (probed with a temp file, removed at once)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    folder = next(p for p in path.parents if p.exists() or p == p.parent)
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder))
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.probe."):
        pass


def local_file_error(path: Path | str, error: OSError, action: str) -> LocalFileError:
    """LocalFileError for ``error`` while ``action``-ing ``path`` (read, write, create...)."""
    reason = error.strerror or str(error)
    if error.errno == errno.EROFS:
        reason = "it is on a read-only file system"
    elif error.errno == errno.EISDIR:
        reason = "a directory is in its place"
    elif error.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
    elif error.errno == errno.ENOSPC:
        reason = "no space left on the device"
    where = str(path)
    culprit = error.filename
    if isinstance(culprit, str | os.PathLike) and str(culprit) != where \
            and not Path(culprit).name.startswith("."):  # our own temp files: name the target
        where += f" (at {culprit})"
    return LocalFileError(
        f"Could not {action} {where}: {reason}. This is a local file-system problem, not a "
        "network one: retrying will not help; make the path writable (or readable) or choose "
        "another one."
    )


def write_texts_atomic(texts: dict[Path, str], originals: dict[Path, str]) -> None:
    """Write several files all or none: every new text goes to a temp file beside its target
    first (a read-only or full directory fails here, before any target changed), then each is
    renamed into place; if a rename still fails, the files already replaced get their
    ``originals`` back. A symlinked target is written through the link (the real file
    changes, the link stays a link).
    """
    staged: list[tuple[Path, str]] = []
    try:
        for path in texts:
            refuse_special(path)
        for path, text in texts.items():
            target = path.resolve() if path.is_symlink() else path
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                           dir=target.parent)
            except OSError as error:
                raise local_file_error(path, error, "write") from None
            staged.append((target, tmp))
            try:
                os.chmod(tmp, _target_mode(target))
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                raise local_file_error(path, error, "write") from None
        done: list[Path] = []
        for (target, tmp), path in zip(staged, texts, strict=True):
            try:
                os.replace(tmp, target)
            except OSError as error:
                for restored, original in zip(done, texts, strict=False):
                    with contextlib.suppress(OSError):
                        write_text_atomic(restored, originals[original])
                raise local_file_error(path, error, "write") from None
            done.append(target)
    finally:
        for _target, tmp in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """``path`` := ``data`` with ``mode``, as a new file: the old one is unlinked first, so
    writing never goes through a hard link into another copy (rattler's package cache, a
    conda package's file)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    path.write_bytes(data)
    os.chmod(path, mode)


def write_fixed_time_tree(root: Path, files: dict[str, bytes], when: int) -> None:
    """``root`` (replaced) holding only ``files`` (relative path -> content, mode 0644) and
    their folders (0755), every one timed ``when``: a tree ``COPY --link`` turns into the same
    layer bytes wherever and whenever it was written. Only for trees written inside a build
    (BuildKit re-sends a context file only when its size or time changed: a context file
    with a fixed time and an unchanged size would keep its old bytes)."""
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, mode=0o755)
    folders: set[Path] = set()
    for relative, content in sorted(files.items()):
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        target.write_bytes(content)
        os.chmod(target, 0o644)
        os.utime(target, (when, when), follow_symlinks=False)
        folders.update(root / part for part in Path(relative).parents[:-1])
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        os.chmod(folder, 0o755)
        os.utime(folder, (when, when), follow_symlinks=False)
