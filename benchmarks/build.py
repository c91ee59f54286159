"""Image build benchmark: cold build, no-op rebuild, rebuild after a non-environment change,
and the image's size against the environment's size on disk.

Runs the demo project (``lockdock.testing.demo``: the local channel with the packaged CPython,
pip torch CPU) on the debootstrap base image; needs root and the engine (``ci/engine start``).

    python benchmarks/build.py [--repeat N] [--no-torch]

Prints a table of medians over N runs (default 1: a cold build takes minutes).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lockdock.context import resolve_flavor
from lockdock.facts import ENV_PREFIX
from lockdock.image.build import BuildResult
from lockdock.image.build import build as build_image
from lockdock.testing import ChannelServer
from lockdock.testing.baseimage import ensure_base_image, ensure_engine
from lockdock.testing.demo import (
    CHANNEL_NAME,
    CPU_TORCH,
    build_demo_channel,
    demo_environment,
    mirror_option,
    write_demo_project,
)

NAME = "lockdock-bench/cpu"


def _cli(project: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "lockdock.cli", "-C", str(project), *args],
                   check=True, env=demo_environment(), capture_output=True)


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-torch", action="store_true", help="a small environment only")
    args = parser.parse_args()
    problem = ensure_engine()
    if problem:
        print(f"no engine: {problem}", file=sys.stderr)
        return 1
    base = ensure_base_image()
    with tempfile.TemporaryDirectory(prefix="lockdock-bench.") as tmp:
        served = Path(tmp) / "served"
        build_demo_channel(served)
        with ChannelServer(served) as server:
            project = write_demo_project(Path(tmp) / "project",
                                         pip=() if args.no_torch else (CPU_TORCH, "numpy"))
            _cli(project, "lock", "cpu", *mirror_option(f"{server.url}/{CHANNEL_NAME}"))
            _cli(project, "fetch", "cpu")

        def build(**options: bool) -> BuildResult:
            return build_image(resolve_flavor(project, "cpu"), base_image=base, name=NAME,
                               **options)

        dockerfile = project / "images/cpu/Dockerfile"
        original = dockerfile.read_text()
        cold, noop, changed = [], [], []
        for run in range(args.repeat):
            cold.append(_timed(lambda: build(force=True, no_cache=True)))
            noop.append(_timed(lambda: build()))
            dockerfile.write_text(original + f'RUN echo "change {run}" > /home/lockdock/motd\n')
            changed.append(_timed(lambda: build(force=True)))
            dockerfile.write_text(original)
        reference = build().reference  # the no-op: its content-addressed tag
        image_bytes = int(_docker("image", "inspect", reference, "--format", "{{.Size}}"))
        env_bytes = int(_docker("run", "--rm", reference, "du", "-sb",
                                ENV_PREFIX).split()[0])
        base_bytes = int(_docker("image", "inspect", base, "--format", "{{.Size}}"))
        for tag in _docker("image", "ls", NAME, "--format", "{{.Repository}}:{{.Tag}}").split():
            _docker("image", "rm", tag)

    def row(what: str, seconds: list[float]) -> str:
        return f"| {what} | {statistics.median(seconds):8.1f} s | {len(seconds)} |"

    print("| step | median | runs |")
    print("|---|---:|---:|")
    print(row("cold build (--no-cache, export + load)", cold))
    print(row("no-op rebuild (tag exists)", noop))
    print(row("rebuild after a non-environment change", changed))
    print()
    print("| size | bytes | MiB |")
    print("|---|---:|---:|")
    for what, size in (("image (local store, compressed layers)", image_bytes),
                       ("base image", base_bytes),
                       ("image minus base (environment + lockdock layers)",
                        image_bytes - base_bytes),
                       ("environment on disk (du -sb in the image)", env_bytes)):
        print(f"| {what} | {size} | {size / 2**20:.0f} |")
    print(f"\n(image - base) / environment on disk: {(image_bytes - base_bytes) / env_bytes:.2f}"
          " (image sizes are compressed layer bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
