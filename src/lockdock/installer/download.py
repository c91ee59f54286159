"""Downloading one artifact into the store: streamed to a temp file beside its place,
hashed while it streams, renamed into place only on a match; bounded retries of transient
network errors (a body cut short of its ``Content-Length`` is one); temp files of this
process removed at once on an interrupt, those of dead processes swept by the next fetch.
A failure is told in one line of plain words (``failure_reason``), never urllib's reprs,
newlines or raw status lines; one that a retry cannot fix (a certificate that fails
verification, a redirect to no URL) is not retried; a ``file://`` source that cannot be read
(a directory, no permission) is a local file-system problem (LocalFileError), not a network one.

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
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, Protocol

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

    def __init__(self, received: int, expected: int) -> None:
        super().__init__(b"", expected - received)
        self.received = received
        self.total = expected

    def __str__(self) -> str:
        return (f"the connection closed after {self.received} of the {self.total} bytes its "
                f"Content-Length announced, {self.total - self.received} more expected")

    __repr__ = __str__


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


def _is_certificate_error(error: object) -> bool:
    try:
        import ssl
    except ImportError:  # pragma: no cover - a Python built without ssl fetches no https
        return False
    return isinstance(error, ssl.SSLCertVerificationError)


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return error.code in TRANSIENT_HTTP
    if isinstance(error, urllib.error.URLError):
        return not isinstance(error.reason, FileNotFoundError | PermissionError | str) \
            and not _is_certificate_error(error.reason)
    if _is_certificate_error(error):
        return False
    return isinstance(
        error,
        TimeoutError
        | ConnectionError
        | http.client.IncompleteRead
        | http.client.RemoteDisconnected,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


def failure_reason(error: BaseException) -> str:
    """Why a download failed, in one line of plain words (pure)."""
    if isinstance(error, urllib.error.HTTPError):
        message = str(error.msg or "")
        loop = urllib.request.HTTPRedirectHandler.inf_msg
        if message.startswith(loop):
            return (f"the server keeps redirecting (last answer: HTTP {error.code} "
                    f"{_one_line(message[len(loop):]) or 'redirect'}): a redirect loop, or more "
                    f"than {urllib.request.HTTPRedirectHandler.max_redirections} redirects")
        return f"HTTP Error {error.code}: {_one_line(message) or 'no reason given'}"
    if isinstance(error, urllib.error.URLError):
        reason = error.reason
        if isinstance(reason, BaseException):
            return failure_reason(reason)
        return _one_line(str(reason)) or "no reason given"
    if _is_certificate_error(error):
        detail = getattr(error, "verify_message", None) or _one_line(str(error))
        return (f"the server's TLS certificate failed verification ({_one_line(detail)}); not "
                "retried: trust its issuer (SSL_CERT_FILE names a CA bundle) or use another URL")
    if isinstance(error, _Truncated):
        return str(error)
    if isinstance(error, http.client.IncompleteRead):
        more = f", {error.expected} more expected" if error.expected is not None else ""
        return f"the connection closed after {len(error.partial)} bytes of the body{more}"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(error, http.client.BadStatusLine):
        line = _one_line(str(getattr(error, "line", error)))[:80]
        return f"the server did not answer in HTTP (its first line: {line!r})"
    return _one_line(str(error)) or type(error).__name__


def _unusable_location(url: str, error: ValueError) -> NoReturn:
    raise urllib.error.URLError(
        f"the server redirected to {url!r}, which is not a URL that can be fetched "
        f"({_one_line(str(error))}); not retried"
    ) from None


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, but a ``Location`` it cannot parse (``http://[::1/x``: a
    ValueError out of ``urlsplit``) is a network failure naming it, not a crash."""

    def http_error_302(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> Any:
        try:
            return super().http_error_302(req, fp, code, msg, headers)
        except ValueError as error:
            with contextlib.suppress(Exception):
                fp.close()
            _unusable_location(str(headers.get("Location") or headers.get("URI") or ""), error)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


@contextlib.contextmanager
def open_url(url: str) -> Iterator[IO[bytes]]:
    request = urllib.request.Request(url, headers={"User-Agent": "lockdock"})
    try:
        response = urllib.request.build_opener(_Redirects).open(
            request, timeout=DOWNLOAD_TIMEOUT_S)
    except ValueError as error:  # the lock's URL itself (a port that is no number...)
        raise urllib.error.URLError(
            f"it is not a URL that can be fetched ({_one_line(str(error))})") from None
    with response:
        yield response


def _local_source_problem(url: str, error: BaseException) -> OSError | None:
    """The OSError of a ``file://`` source that exists but cannot be read (a directory, no
    permission): a local file-system problem. A missing file stays a download failure."""
    if urllib.parse.urlsplit(url).scheme != "file" \
            or not isinstance(error, urllib.error.URLError) \
            or isinstance(error, urllib.error.HTTPError):
        return None
    reason = error.reason
    if isinstance(reason, OSError) and not isinstance(reason, FileNotFoundError):
        return reason
    return None


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
                raise _Truncated(received, expected_length)
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
    attempts = 0
    for attempt in range(DOWNLOAD_ATTEMPTS):
        if attempt:
            pause = RETRY_PAUSES[min(attempt - 1, len(RETRY_PAUSES) - 1)]
            if stop is None:
                sleep(pause)
            elif stop.wait(pause):  # interrupted while pausing
                raise Cancelled()
        attempts += 1
        try:
            _download_once(artifact, final, sink, opener, stop)
            return final
        except (DownloadFailure, Cancelled, LocalFileError):
            raise
        except (OSError, http.client.HTTPException) as error:
            if isinstance(error, urllib.error.HTTPError):
                with contextlib.suppress(Exception):
                    error.close()  # it holds the response's connection
            if (local := _local_source_problem(artifact.url, error)) is not None:
                where = local.filename or urllib.request.url2pathname(
                    urllib.parse.urlsplit(artifact.url).path)
                raise local_file_error(where, local, f"read {describe(artifact)} from") \
                    from None
            last = error
            if not _is_transient(error):
                break
    reason = failure_reason(last) if last is not None else "no attempt was made"
    tries = f"; tried {attempts} times" if attempts > 1 else ""
    raise DownloadFailure(f"{describe(artifact)} from {artifact.url}: {reason}{tries}",
                          integrity=False)


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
