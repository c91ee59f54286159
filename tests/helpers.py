"""Helpers every test tier shares: one way to run the CLI (in process, or as a process the
way users run it), one lock-entry factory, one ``docker`` runner, one fake ``docker`` client
on PATH, one smallest project (a flavor, an environment, a lock of one package) and one
local HTTP server in a thread."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import stat
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockdock.cli import main
from lockdock.installer.lockfile import LockedArtifact


def run_cli(*args: str | Path, project: Path | None = None) -> int:
    """``lockdock [-C project] ARGS`` in this process; its exit code (0 on success)."""
    argv = [*(["-C", str(project)] if project is not None else []), *map(str, args)]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return int(exited.value.code or 0)


def entry(
    name: str,
    version: str,
    manager: str = "conda",
    *,
    build: str = "h0_0",
    platform: str = "linux-64",
    url: str | None = None,
    sha256: str | None = None,
    categories: frozenset[str] = frozenset({"main"}),
) -> LockedArtifact:
    """A lock entry as lockdock reads one (conda URLs carry ``name-version-build.conda``)."""
    if url is None:
        url = (f"https://conda.anaconda.org/conda-forge/{platform}/{name}-{version}-{build}.conda"
               if manager == "conda"
               else f"https://files.example/{name}-{version}-py3-none-any.whl")  # fmt: skip
    return LockedArtifact(name=name, version=version, manager=manager, platform=platform,
                          url=url, sha256=sha256, md5=None, categories=categories)  # fmt: skip


def lockdock_process(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m lockdock.cli -C PROJECT ARGS`` as its own process, with the demo's
    environment (uv finds the local wheels, e.g. the CPU torch)."""
    from lockdock.testing.demo import demo_environment

    return subprocess.run(
        [sys.executable, "-m", "lockdock.cli", "-C", str(project), *args],
        capture_output=True, text=True, env={**demo_environment(), **(env or {})}, check=False,
    )  # fmt: skip


def succeeded(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}"
    return proc


def docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`docker ARGS`, never hanging a test forever."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False,
                          timeout=timeout)


def tags_of(name: str) -> list[str]:
    """Every ``repository:tag`` the engine has for the repository ``name``."""
    proc = docker("image", "ls", name, "--format", "{{.Repository}}:{{.Tag}}")
    return [line for line in proc.stdout.split() if line]


def remove_tags(name: str) -> None:
    for tag in tags_of(name):
        docker("image", "rm", tag)


def installer_for_image(root: Path, dest: Path) -> Path:
    """The installer a build of ``root`` staged (its modules + PyYAML for the image's CPython
    3.11), copied to ``dest`` readable by uid 1000: mount it to run ``verify_prefix`` inside
    an image."""
    from lockdock.workspace import Workspace

    installer = Workspace(root).build_dir / "installer-linux-64"
    shutil.copytree(installer / "src", dest / "src")
    wheel = next((installer / "wheels").glob("pyyaml-*-cp311-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(dest / "deps")
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def fake_docker(tmp_path: Path, script: str) -> str:
    """A PATH whose ``docker`` is the shell ``script`` (faults injected without an engine)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\n" + script)
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    return f"{bin_dir}:/usr/bin:/bin"


def one_package_project(root: Path) -> Path:
    """``root`` as a project: flavor cpu, an empty environment.yml, a lock of one package."""
    from lockdock.testing.flavors import write_flavor
    from lockdock.testing.installs import Entry, write_lock

    write_flavor(root / "images", "cpu")
    (root / "environment.yml").write_text("dependencies: []\n")
    package = root / "pkgs" / "hello-1.0-0.conda"
    package.parent.mkdir(parents=True)
    package.write_bytes(b"hello")
    write_lock(root / "conda-lock.yml",
               [Entry(package, f"https://c/noarch/{package.name}", "conda", "hello", "1.0")])
    return root


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler] | object) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` served by ``handler`` (a request handler class, or a
    factory such as ``functools.partial(SimpleHTTPRequestHandler, directory=...)``) in a
    thread, shut down on exit."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # type: ignore[arg-type]
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
