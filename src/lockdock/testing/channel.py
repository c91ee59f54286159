"""A local conda channel for tests, benchmarks and the demo.

>>> pkgs = [FakePackage("hello", "1.0"), FakePackage("hello", "2.0", depends=("__cuda >=12",))]
>>> build_channel(tmp / "channel", pkgs)            # doctest: +SKIP
>>> with ChannelServer(tmp / "channel") as server:  # doctest: +SKIP
...     server.url                                   # http://127.0.0.1:PORT

Packages are real ``.conda`` archives made by ``rattler_build.assemble_package`` with a fixed
timestamp (``BUILD_TIMESTAMP`` unless a package names its own), so the same packages always
give the same bytes (and the same sha256 in a lock).
Building runs ``python -m lockdock.testing.build_channel`` and indexing runs
``lockdock.testing.channel.index_main`` in a child: py-rattler-build and py-rattler abort at
interpreter exit when imported into one process, so neither is imported here.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

#: Every package is stamped with this time (2024-01-01T00:00:00Z): builds are reproducible.
BUILD_TIMESTAMP = 1704067200

SUBDIRS = ("noarch", "linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64")


@dataclass(frozen=True)
class FakePackage:
    """One conda package to build. ``files`` maps relative paths to text content.

    ``source_dir`` (optional) adds every file of a directory tree (binaries included), for
    packages made from real builds such as a CPython prefix. ``detect_prefix`` records
    prefix placeholders in text and binary files, as conda-build does (only matters for
    ``source_dir`` trees built for a specific prefix). ``noarch`` is ``"generic"`` or
    ``"python"`` for ``subdir="noarch"`` (default ``"generic"``). ``timestamp``: the build
    time recorded in the package (default ``BUILD_TIMESTAMP``); a later one makes a relock
    move the lock's ``SOURCE_DATE_EPOCH``, as conda-forge's newer builds do.
    """

    name: str
    version: str
    build: str = "0"
    build_number: int = 0
    subdir: str = "noarch"
    depends: tuple[str, ...] = ()
    constrains: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    source_dir: str | None = None
    detect_prefix: bool = False
    noarch: str | None = None
    license: str | None = None
    timestamp: int = BUILD_TIMESTAMP

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.build}.conda"

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["files"] = dict(self.files)
        data["depends"] = list(self.depends)
        data["constrains"] = list(self.constrains)
        return data


def _run_python(args: Sequence[str], stdin: str | None = None) -> None:
    """Run ``python ARGS`` in a child process; raise RuntimeError with its stderr on failure."""
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    proc = subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"`python {' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stderr}"
        )


def build_channel(
    channel_dir: Path, packages: Sequence[FakePackage], *, index: bool = True
) -> Path:
    """Build ``packages`` into ``channel_dir/<subdir>/`` and index the channel.

    Adds to an existing channel (packages with the same file name are rebuilt). Returns
    ``channel_dir``. ``noarch/`` always exists, as conda channels require.
    """
    channel_dir = Path(channel_dir).resolve()
    for package in packages:
        if package.subdir not in SUBDIRS:
            raise ValueError(f"{package.name}: unknown subdir {package.subdir!r}")
    (channel_dir / "noarch").mkdir(parents=True, exist_ok=True)
    if packages:
        payload = json.dumps(
            {"channel_dir": str(channel_dir), "packages": [p.to_json() for p in packages]}
        )
        _run_python(["-m", "lockdock.testing.build_channel"], stdin=payload)
    if index:
        index_channel(channel_dir)
    return channel_dir


def index_channel(channel_dir: Path) -> None:
    """Write ``repodata.json`` (and ``.zst``) for every subdir, with py-rattler, in a child."""
    code = "import sys; from lockdock.testing.channel import index_main; index_main(sys.argv[1])"
    _run_python(["-c", code, str(Path(channel_dir).resolve())])


def index_main(channel_dir: str) -> None:
    """Child-process entry: index, then leave without interpreter finalization.

    py-rattler 0.28's indexer can leave a runtime thread behind that crashes the
    interpreter while it finalizes (SIGSEGV / "PyGILState_Release ... finalizing") after
    the repodata is written; ``os._exit`` skips finalization once the work is flushed.
    """
    import asyncio

    from rattler.index import index_fs

    asyncio.run(index_fs(Path(channel_dir), write_shards=False, force=True))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ChannelServer:
    """Serve ``directory`` over HTTP on ``127.0.0.1:<free port>`` while the block runs.

    ``url`` is ``http://127.0.0.1:PORT`` (no trailing slash); a channel at
    ``directory/name`` is ``f"{server.url}/name"``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        handler = functools.partial(_QuietHandler, directory=str(self.directory))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self._thread: threading.Thread | None = None

    def start(self) -> ChannelServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"channel-server-{self.url}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ChannelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
