"""Bad inputs, continued: servers answering nonsense (a redirect to no URL, a redirect loop,
a body cut short, no HTTP at all, a certificate that fails verification), ``file://``
sources that are not files, ``-o`` onto a device or pipe, and option values that used to
mean a default silently (``--jobs 0``, ``--platform ''``, ``--prefix ''``,
``SOURCE_DATE_EPOCH=-5``).

Same contract as ``test_bad_input``: the documented exit code, one paragraph, no traceback,
the culprit named; verified downloads kept; nothing retried that a retry cannot fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import socket
import ssl
import stat
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lockdock.errors import LocalFileError, NetworkError, UsageError
from lockdock.fsutil import atomic_write, write_text_atomic, write_texts_atomic
from lockdock.installer import download as downloads
from lockdock.installer import store
from lockdock.installer.lockfile import LockedArtifact
from tests.helpers import http_server
from tests.unit.test_bad_input import (
    Project,
    assert_clean_failure,
    fetch_from,
    proj,
    run_cli,
    snapshot,
)

__all__ = ["proj"]  # the fixture, imported to be used here


def artifact(url: str, data: bytes, name: str = "alpha") -> LockedArtifact:
    return LockedArtifact(
        name=name, version="1.0", manager="pip", platform="linux-64", url=url,
        sha256=hashlib.sha256(data).hexdigest(), md5=None, categories=frozenset({"main"}),
    )


def one_line(message: str) -> None:
    assert "\n" not in message, message
    assert "Traceback" not in message and "_Truncated" not in message, message


@pytest.fixture
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses download() would sleep (none really taken)."""
    pauses: list[float] = []
    original = downloads.download

    def recorded(*args: Any, **kwargs: Any) -> Path:
        kwargs["sleep"] = pauses.append
        kwargs["stop"] = None
        return original(*args, **kwargs)

    monkeypatch.setattr(downloads, "download", recorded)
    return pauses


class _Answers(http.server.BaseHTTPRequestHandler):
    """``/good/*``: GOOD; ``/bad-redirect``: a Location urllib cannot parse; ``/loop``:
    redirects to itself; ``/short``: half the body of its Content-Length."""

    protocol_version = "HTTP/1.1"
    requests: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/good/"):
            self._body(GOOD)
        elif self.path == "/bad-redirect":
            self._redirect("http://[::1/x")
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
        else:
            self.send_error(404)

    def _body(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


GOOD = b"good bytes " * 1000


@pytest.fixture
def server() -> Iterator[str]:
    _Answers.requests = []
    with http_server(_Answers) as url:
        yield url


# --- finding 1: a redirect to a malformed URL --------------------------------------------


def test_a_redirect_to_no_url_is_a_network_error_and_the_good_download_is_kept(
    server: str, tmp_path: Path, no_pauses: list[float]
) -> None:
    good = artifact(f"{server}/good/alpha-1.0-py3-none-any.whl", GOOD)
    bad = artifact(f"{server}/bad-redirect", b"never", name="beta")
    with pytest.raises(NetworkError) as raised:
        store.fetch([good, bad], tmp_path / "store", jobs=2)
    message = str(raised.value)
    one_line(message)
    assert "'http://[::1/x'" in message and "beta 1.0" in message
    assert store.artifact_path(tmp_path / "store", good).read_bytes() == GOOD
    assert _Answers.requests.count("/bad-redirect") == 1 and not no_pauses  # not retried


def test_cli_fetch_of_a_redirect_to_no_url_exits_5(
    proj: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def bad_redirect(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "http://[::1/x")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    monkeypatch.setattr(downloads, "RETRY_PAUSES", (0.0, 0.0))
    code, output, before, after = fetch_from(proj, bad_redirect, capsys)
    assert_clean_failure(code, output, 5, "http://[::1/x")
    assert "internal error" not in output
    assert after == before


# --- finding 6: failures a retry cannot fix ------------------------------------------------


def test_a_certificate_that_fails_verification_is_not_retried(tmp_path: Path) -> None:
    calls: list[str] = []

    def bad_certificate(url: str) -> Any:
        calls.append(url)
        error = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                                "verify failed: self-signed certificate")
        error.verify_message = "self-signed certificate"
        raise urllib.error.URLError(error)

    pauses: list[float] = []
    item = artifact("https://127.0.0.1:9/alpha-1.0-py3-none-any.whl", GOOD)
    with pytest.raises(downloads.DownloadFailure) as raised:
        downloads.download(item, tmp_path / "store", opener=bad_certificate,
                           sleep=pauses.append)
    assert len(calls) == 1 and not pauses
    message = str(raised.value)
    one_line(message)
    assert "TLS certificate failed verification (self-signed certificate)" in message


def test_a_file_url_naming_a_directory_is_a_local_file_error_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "alpha-1.0-py3-none-any.whl"
    folder.mkdir()
    pauses: list[float] = []
    with pytest.raises(LocalFileError) as raised:
        downloads.download(artifact(folder.as_uri(), GOOD), tmp_path / "store",
                           sleep=pauses.append)
    assert not pauses
    assert raised.value.exit_code == 16
    assert f"Could not read alpha 1.0 (pip, alpha-1.0-py3-none-any.whl) from {folder}: a " \
           "directory is in its place" in str(raised.value)
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.part"))


# --- finding 7: one clean line per network failure ----------------------------------------


def _failure(url: str, tmp_path: Path) -> str:
    """The one-line message of downloading ``url`` (pauses skipped)."""
    with pytest.raises(downloads.DownloadFailure) as raised:
        downloads.download(artifact(url, GOOD), tmp_path / "store", sleep=lambda _: None)
    message = str(raised.value)
    one_line(message)
    return message


def test_a_body_cut_short_names_the_bytes_really_read(server: str, tmp_path: Path) -> None:
    message = _failure(f"{server}/short", tmp_path)
    assert "closed after 10 of the 1000 bytes its Content-Length announced, 990 more " \
           "expected; tried 3 times" in message


def test_a_redirect_loop_is_one_line(server: str, tmp_path: Path) -> None:
    message = _failure(f"{server}/loop", tmp_path)
    assert "the server keeps redirecting (last answer: HTTP 302 Found)" in message


def test_a_server_that_does_not_speak_http_is_one_line(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"NOT HTTP\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/alpha-1.0-py3-none-any.whl"
    try:
        with pytest.raises(downloads.DownloadFailure) as raised:
            downloads.download(artifact(url, GOOD), tmp_path / "store", sleep=lambda _: None)
    finally:
        listener.close()
    message = str(raised.value)
    one_line(message)
    assert message.endswith("the server did not answer in HTTP (its first line: 'NOT HTTP')")


# --- finding 5: -o onto a device node, a pipe -----------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_the_atomic_writers_refuse_a_pipe_and_leave_it_a_pipe(fifo: Path) -> None:
    match = r"fifo: it is a pipe \(FIFO\), not a regular"
    with pytest.raises(LocalFileError, match=match):
        write_text_atomic(fifo, "x")
    with pytest.raises(LocalFileError, match=match):
        write_texts_atomic({fifo: "x"}, {fifo: ""})
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in fifo.parent.iterdir()) == ["fifo"]  # no temp file left


def test_the_atomic_writer_refuses_a_link_to_a_pipe_not_one_to_a_file(fifo: Path) -> None:
    link = fifo.parent / "link"
    link.symlink_to(fifo)
    with pytest.raises(LocalFileError, match="pipe"), atomic_write(link) as handle:
        handle.write("x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and link.is_symlink()
    target = fifo.parent / "real.json"  # a link to a regular file is still written through
    target.write_text("old", encoding="utf-8")
    link.unlink()
    link.symlink_to(target)
    write_text_atomic(link, "new")
    assert target.read_text(encoding="utf-8") == "new" and link.is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_the_atomic_writer_refuses_a_character_device(tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a copy of /dev/null, never it
    with pytest.raises(LocalFileError, match="it is a character device"):
        write_text_atomic(null, "x")
    assert stat.S_ISCHR(os.stat(null).st_mode)


@pytest.mark.parametrize("argv", [
    ("sbom", "cpu", "--platform", "linux-64", "-o", "{fifo}"),
    ("render", "cpu", "-o", "{fifo}"),
])
def test_cli_output_onto_a_pipe_is_a_usage_error(
    argv: tuple[str, ...], proj: Project, fifo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fifo  # outside the watched folder: snapshot() would block reading it
    before = snapshot(proj.root)
    code, output = run_cli(["-C", str(proj.project),
                            *(a.format(fifo=path) for a in argv)], capsys)
    assert_clean_failure(code, output, 2, f"Option --output '{path}' is a pipe (FIFO)")
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    assert snapshot(proj.root) == before
    assert ("standard output" in output) == (argv[0] == "sbom")


@pytest.mark.skipif(not Path("/dev/fd").is_dir(), reason="no /dev/fd")
def test_dev_fd_of_a_pipe_is_refused_as_a_pipe(
    proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    read_end, write_end = os.pipe()
    try:
        code, output = run_cli(["-C", str(proj.project), "sbom", "cpu", "--platform",
                                "linux-64", "-o", f"/dev/fd/{write_end}"], capsys)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert_clean_failure(code, output, 2, "is a pipe (FIFO)")


# --- finding 9: option values that silently meant a default ---------------------------------


@pytest.mark.parametrize(("argv", "culprit"), [
    (("fetch", "--jobs", "0"), "'--jobs': 0 is not in the range x>=1"),
    (("fetch", "--jobs", "-3"), "'--jobs': -3 is not in the range x>=1"),
    (("sbom", "cpu", "--platform", ""), "'--platform': it is empty"),
    (("fetch", "--platform", ""), "'--platform': it is empty"),
    (("install", "{lock}", "--prefix", ""), "'--prefix': it is empty"),
    (("install", "{lock}", "--prefix", "{root}/p", "--jobs", "0"), "'--jobs': 0 is not in"),
])
def test_empty_or_out_of_range_options_are_usage_errors(
    argv: tuple[str, ...], culprit: str, proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(proj.root)
    values = {"lock": str(proj.lock), "root": str(proj.root)}
    code, output = run_cli(["-C", str(proj.project), *(a.format(**values) for a in argv)],
                           capsys)
    assert_clean_failure(code, output, 2, culprit)
    assert snapshot(proj.root) == before


@pytest.mark.parametrize(("value", "culprit"), [
    ("-5", "SOURCE_DATE_EPOCH='-5' is not a whole number of seconds since 1970-01-01 UTC"),
    ("1.5", "SOURCE_DATE_EPOCH='1.5' is not a whole number"),
    ("99999999999999", "SOURCE_DATE_EPOCH='99999999999999' is after the year 9999"),
])
def test_sbom_refuses_a_source_date_epoch_out_of_the_spec(
    value: str, culprit: str, proj: Project, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    code, output = run_cli(["-C", str(proj.project), "sbom", "cpu", "--platform", "linux-64"],
                           capsys)
    assert_clean_failure(code, output, 2, culprit)


def test_source_date_epoch_parser() -> None:
    from lockdock.errors import BuildError
    from lockdock.textio import MAX_SOURCE_DATE_EPOCH, source_date_epoch

    assert source_date_epoch("") is None and source_date_epoch(" 0 ") == 0
    assert source_date_epoch(str(MAX_SOURCE_DATE_EPOCH)) == MAX_SOURCE_DATE_EPOCH
    for bad in ("-5", "+5", "1e9", "٣", str(MAX_SOURCE_DATE_EPOCH + 1), "9" * 5000):
        with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH="):
            source_date_epoch(bad)
    with pytest.raises(BuildError):
        source_date_epoch("-1", BuildError)


def test_source_date_epoch_parser_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from lockdock.textio import source_date_epoch

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert source_date_epoch() == 1700000000
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert source_date_epoch() is None
