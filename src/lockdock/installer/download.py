"""Downloading one artifact into the store: streamed to a temp file beside its place,
hashed while it streams, renamed into place only on a match; bounded retries of transient
network errors (a body cut short of its ``Content-Length`` is one); temp files of this
process removed at once on an interrupt, those of dead processes swept by the next fetch.

Part of the installer: standard library only (``urllib``, so a base image's plain Python
can fetch). ``lockdock.installer.store`` owns the layout and the verification it uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from lockdock.errors import LocalFileError
from lockdock.fsutil import local_file_error
from lockdock.installer.lockfile import LockedArtifact
from lockdock.installer.store import (
    artifact_path,
    describe,
    digest_dirs,
    expected_digests,
    mismatch_message,
)

#: Attempts per download (1 + retries) and the pause before each retry, in seconds.
DOWNLOAD_ATTEMPTS = 3


RETRY_PAUSES = (1.0, 3.0)


#: HTTP statuses worth retrying: the server or a proxy may answer differently a moment later.
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


DOWNLOAD_TIMEOUT_S = 60.0


CHUNK = 1 << 20


TEMP_SUFFIX = ".part"


#: A download's temp file: ``.<name>.<pid>.<thread>.<random>.part`` (the pid tells a rerun
#: whether the download that left it is still running).
_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.\d+\.[A-Za-z0-9_]+" + re.escape(TEMP_SUFFIX) + "$")


class ProgressSink(Protocol):
    def advance(self, amount: float = 1) -> None: ...


class DownloadFailure(Exception):
    def __init__(self, message: str, *, integrity: bool) -> None:
        super().__init__(message)
        self.integrity = integrity


class Cancelled(Exception):
    """The fetch was interrupted (Ctrl-C, a failure elsewhere): stop at the next chunk."""


class _Truncated(http.client.IncompleteRead):
    """The body ended before its ``Content-Length``: the connection broke, a network error
    worth retrying, never a hash mismatch (urllib returns a short body without complaint)."""


#: Temp files of downloads running in this process, removed when a fetch is interrupted
#: (their threads may be stuck in a read until the timeout; the process does not wait).
_ACTIVE_TEMPS: set[Path] = set()


_ACTIVE_LOCK = threading.Lock()


def remove_active_temps() -> None:
    """Delete this process's download temp files now (interrupt handling)."""
    with _ACTIVE_LOCK:
        temps = list(_ACTIVE_TEMPS)
        _ACTIVE_TEMPS.clear()
    for tmp in temps:
        with contextlib.suppress(OSError):
            tmp.unlink()
        with contextlib.suppress(OSError):
            tmp.parent.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != 0


def sweep_dead_temps(store: Path) -> list[Path]:
    """Remove temp files that downloads of dead processes (SIGKILL, a crash) left behind,
    and their digest folders if now empty; files of running fetches are left alone."""
    removed: list[Path] = []
    for _, digest_dir in digest_dirs(store):
        for entry in digest_dir.iterdir():
            match = _TEMP_NAME.match(entry.name)
            if match and int(match.group(1)) != os.getpid() \
                    and not _pid_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
        with contextlib.suppress(OSError):
            digest_dir.rmdir()  # only succeeds when empty
    return removed


def _content_length(response: Any) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code in TRANSIENT_HTTP
    if isinstance(error, urllib.error.URLError):
        return not isinstance(error.reason, FileNotFoundError | PermissionError | str)
    return isinstance(
        error,
        TimeoutError
        | ConnectionError
        | http.client.IncompleteRead
        | http.client.RemoteDisconnected,
    )


@contextlib.contextmanager
def open_url(url: str) -> Iterator[IO[bytes]]:
    request = urllib.request.Request(url, headers={"User-Agent": "lockdock"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
        yield response


def _download_once(
    artifact: LockedArtifact,
    final: Path,
    progress: ProgressSink,
    opener: Callable[..., Any],
    stop: threading.Event | None = None,
) -> None:
    """Stream to a temp file beside ``final``; hash; rename into place only on a match.

    Local file-system failures are LocalFileError (naming the path), never network errors:
    retrying a read-only store does not help.
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.name}.{os.getpid()}.{threading.get_ident()}.",
            suffix=TEMP_SUFFIX,
            dir=final.parent,
        )
    except OSError as error:
        raise local_file_error(final, error, "create a download in") from None
    tmp = Path(tmp_name)
    with _ACTIVE_LOCK:
        _ACTIVE_TEMPS.add(tmp)
    try:
        hashers = {name: hashlib.new(name) for name in expected_digests(artifact)}
        with os.fdopen(fd, "wb") as out, opener(artifact.url) as response:
            expected_length = _content_length(response)
            received = 0
            while chunk := response.read(CHUNK):
                if stop is not None and stop.is_set():
                    raise Cancelled()
                try:
                    out.write(chunk)
                except OSError as error:
                    raise local_file_error(final, error, "write") from None
                received += len(chunk)
                for hasher in hashers.values():
                    hasher.update(chunk)
                progress.advance(len(chunk))
            if expected_length is not None and received < expected_length:
                raise _Truncated(b"", expected_length - received)
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as error:
                raise local_file_error(final, error, "write") from None
        actual = {name: h.hexdigest() for name, h in hashers.items()}
        problem = mismatch_message(artifact, artifact.url, actual)
        if problem:
            raise DownloadFailure(f"{problem}; the download was discarded", integrity=True)
        try:
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        except OSError as error:
            raise local_file_error(final, error, "write") from None
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE_TEMPS.discard(tmp)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        # A rejected download leaves nothing behind, not even its digest folder (another
        # fetch may be writing there: rmdir only succeeds on an empty folder).
        with contextlib.suppress(OSError):
            if not final.exists():
                final.parent.rmdir()


def download(
    artifact: LockedArtifact,
    store: Path,
    *,
    progress: ProgressSink | None = None,
    opener: Callable[..., Any] = open_url,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> Path:
    """Download one artifact into the store (bounded retry on transient network errors)."""
    final = artifact_path(store, artifact)
    sink = progress or NullProgress()
    last: BaseException | None = None
    for attempt in range(DOWNLOAD_ATTEMPTS):
        if attempt:
            pause = RETRY_PAUSES[min(attempt - 1, len(RETRY_PAUSES) - 1)]
            if stop is None:
                sleep(pause)
            elif stop.wait(pause):  # interrupted while pausing
                raise Cancelled()
        try:
            _download_once(artifact, final, sink, opener, stop)
            return final
        except (DownloadFailure, Cancelled, LocalFileError):
            raise
        except (OSError, http.client.HTTPException) as error:
            last = error
            if not _is_transient(error):
                break
    raise DownloadFailure(f"{describe(artifact)} from {artifact.url}: {last}", integrity=False)


class NullProgress:
    def advance(self, amount: float = 1) -> None:
        pass


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[ProgressSink]:
    """lockdock.progress's bar on a terminal; nothing if rich is absent (image builds)."""
    try:
        from lockdock import progress
    except ImportError:  # pragma: no cover - lockdock.progress is stdlib at its top
        yield NullProgress()
        return
    if not progress.interactive():
        yield NullProgress()
        return
    try:
        with progress.bar(description, None) as bar:
            yield bar
    except ImportError:
        yield NullProgress()
