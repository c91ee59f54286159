"""Interrupts and concurrency with real processes and signals (issue 11).

Ctrl-C during a stalled download exits 130 at once (not after the read timeout) and removes
its temp files; a rerun after a SIGKILLed fetch removes the dead run's temp files; two
installs into one prefix never both run (the second fails fast naming the first) and the
prefix verifies. The project and packages are the bad-input suite's (tests/unit).
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lockdock.installer import prefix as prefix_mod
from lockdock.installer import store as store_mod
from lockdock.installer.download import TEMP_SUFFIX
from tests.unit.test_bad_input import Project, _fill_store, proj, serve  # noqa: F401

CLI = [sys.executable, "-c", "from lockdock.cli import main; main()"]
#: The CLI as a terminal's Ctrl-C reaches it: a run started in the background by a shell
#: without job control (`.ci/run &` from a script) inherits SIGINT ignored, and Python then
#: keeps ignoring it, so the child restores Python's handler first.
CLI_WITH_CTRL_C = [sys.executable, "-c", "import signal; "
                   "signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "from lockdock.cli import main; main()"]


def _parts(root: Path) -> list[Path]:
    return sorted(root.rglob(f"*{TEMP_SUFFIX}"))


def _wait_for(condition: Callable[[], bool], what: str, limit_s: float = 120.0) -> None:
    """Poll until ``condition``; a hang guard, not a timing assertion."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


class Stalling:
    """An HTTP server that sends headers and 10 bytes, then stalls until released; once
    ``healthy`` it serves the real files."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.release = threading.Event()
        self.healthy = False

    def __call__(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = self.files[handler.path.lstrip("/")]
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if self.healthy:
            handler.wfile.write(body)
            return
        handler.wfile.write(body[:10])
        handler.wfile.flush()
        self.release.wait(120)


def _serve_lock(proj: Project, server: Stalling, host: str) -> None:  # noqa: F811
    proj.edit_lock(lambda d: [e.__setitem__("url", f"http://{host}/{Path(e['url']).name}")
                              for e in d["package"]])


def _files(proj: Project) -> dict[str, bytes]:  # noqa: F811
    return {Path(e["url"]).name: Path(e["url"].removeprefix("file://")).read_bytes()
            for e in proj.entries}


def test_ctrl_c_during_a_stalled_download(proj: Project) -> None:  # noqa: F811
    server = Stalling(_files(proj))
    with serve(server) as host:
        _serve_lock(proj, server, host)
        fetch = subprocess.Popen([*CLI_WITH_CTRL_C, "-C", str(proj.project), "fetch"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: bool(_parts(proj.store)), "the download's temp file")
            fetch.send_signal(signal.SIGINT)
            # The read timeout is 60 s: a process that waited for its threads would still run.
            out, err = fetch.communicate(timeout=30)
        finally:
            fetch.kill()
            server.release.set()
    assert fetch.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in out + err
    assert _parts(proj.store) == []


def test_rerun_after_sigkill_removes_dead_temp_files(proj: Project) -> None:  # noqa: F811
    server = Stalling(_files(proj))
    with serve(server) as host:
        _serve_lock(proj, server, host)
        fetch = subprocess.Popen([*CLI_WITH_CTRL_C, "-C", str(proj.project), "fetch"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda: bool(_parts(proj.store)), "the download's temp file")
        fetch.kill()
        fetch.wait()
        left = _parts(proj.store)
        assert left and all(f".{fetch.pid}." in p.name for p in left)  # what SIGKILL leaves
        server.release.set()
        server.healthy = True
        rerun = subprocess.run([*CLI, "-C", str(proj.project), "fetch"], capture_output=True,
                               text=True, check=False, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _parts(proj.store) == []
    assert len(store_mod.inventory(proj.store)) == len(proj.entries)


def _install(proj: Project, prefix: Path) -> subprocess.Popen[str]:  # noqa: F811
    return subprocess.Popen(
        [*CLI, "-C", str(proj.project), "install", str(proj.lock), "--prefix", str(prefix),
         "--platform", "linux-64", "--store", str(proj.root / "store")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_install_into_a_locked_prefix_fails_fast(proj: Project) -> None:  # noqa: F811
    _fill_store(proj, proj.root / "store")
    prefix = proj.root / "env"
    with prefix_mod.prefix_lock(prefix):
        second = _install(proj, prefix)
        out, err = second.communicate(timeout=300)
    assert second.returncode == 8, err
    assert f"Another lockdock install (pid {os.getpid()})" in err
    assert "Traceback" not in out + err
    assert not prefix.exists()  # refused before anything was written


def test_concurrent_installs_never_corrupt_the_prefix(proj: Project) -> None:  # noqa: F811
    _fill_store(proj, proj.root / "store")
    prefix = proj.root / "env"
    runs = [_install(proj, prefix) for _ in range(3)]
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    for code, out, err in results:
        assert code in (0, 8), err
        assert "Traceback" not in out + err and "Fatal Python error" not in err
        if code == 8:
            assert "Another lockdock install" in err
    assert any(code == 0 for code, _, _ in results)
    prefix_mod.verify_prefix(proj.lock, prefix, "linux-64")
    assert not list(prefix.parent.glob(".env.lockdock-*"))  # no lock file or cache left
