#!/usr/bin/env python3
"""`nox -s demo`: the whole pipeline offline, on a machine that reaches no conda channel.

Builds the local demo channel (the running CPython packaged as `python`, small packages; the
pip part, torch + JupyterLab + ipykernel + numpy + pytest, from PyPI or the local wheel), writes
the demo project, then runs the real commands: lock (conda-forge mirrored to the local
channel), fetch, build the cpu image on the local engine (debootstrap base image), gate it,
publish it to the local registry (127.0.0.1:5000), and pin a sample Dockerfile. Prints each
step; the last line is the pinned reference. Needs root for `ci/engine start` and debootstrap.

    python ci/demo.py [--workdir DIR] [--registry 127.0.0.1:5000/lockdock-demo]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lockdock.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def step(number: int, text: str) -> None:
    print(f"\n==> [{number}/9] {text}", flush=True)


def lockdock(project: Path, *args: str, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "lockdock.cli", "-C", str(project), *args]
    print("+ lockdock", " ".join(command[3:]), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True, env=env)
    print(f"   ({time.monotonic() - started:.1f}s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Workspace(ROOT).demo_dir)
    parser.add_argument("--registry", default="127.0.0.1:5000/lockdock-demo")
    args = parser.parse_args(argv)

    from lockdock.testing import baseimage, demo
    from lockdock.testing.channel import ChannelServer
    from lockdock.testing.cpython import packaging_problem

    problem = packaging_problem()  # step 3 packages this CPython (patchelf): say so up front
    if problem is not None:
        print(f"demo: cannot run: {problem}", file=sys.stderr)
        return 1
    step(1, "engine: dockerd + buildx + registry on 127.0.0.1:5000 (ci/engine start)")
    problem = baseimage.ensure_engine()
    if problem is not None:
        print(f"demo: cannot run: {problem}", file=sys.stderr)
        return 1
    registry_check = subprocess.run(["curl", "-fsS", "-o", "/dev/null", "--max-time", "5",
                                     f"http://{args.registry.split('/')[0]}/v2/"])
    if registry_check.returncode != 0:
        print(f"demo: the registry {args.registry.split('/')[0]} does not answer",
              file=sys.stderr)
        return 1

    step(2, "base image (debootstrap, docker import)")
    base_image = baseimage.ensure_base_image()
    print(f"   {base_image}")

    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    served, project = work / "channels", work / "project"
    step(3, "local conda channel: CPython + small packages (rattler-build, rattler index)")
    channel = demo.build_demo_channel(served)
    print(f"   {channel}")

    with ChannelServer(served) as server:
        channel_url = f"{server.url}/{demo.CHANNEL_NAME}"
        env = demo.demo_environment()
        # torch + JupyterLab/ipykernel/numpy (a notebook environment) + pytest for the gates
        demo.write_demo_project(project, pip=demo.DEMO_PIP)

        step(4, f"lock (conda-forge mirrored to {channel_url}; pip part with uv)")
        lockdock(project, "lock", *demo.mirror_option(channel_url), env=env)
        lockdock(project, "lock", "--check", env=env)

        step(5, "fetch into the hash-verified store")
        lockdock(project, "fetch", "cpu", "--platform", "linux-64", env=env)

    step(6, "build the cpu image (BuildKit, installs from the store with no network)")
    lockdock(project, "build", "cpu", "--base-image", base_image, env=env)

    step(7, "gate the image (tests/image inside it)")
    lockdock(project, "test", "cpu", env=env)

    step(8, f"publish to {args.registry}")
    lockdock(project, "publish", "cpu", "--registry", args.registry, env=env)
    record = Workspace(project).read_images_lock()
    print(json.dumps(record, indent=2))

    step(9, "pin a sample Dockerfile")
    app = work / "app"
    app.mkdir()
    dockerfile = app / "Dockerfile"
    dockerfile.write_text(f"FROM {args.registry}:cpu\nCOPY . /work\n", encoding="utf-8")
    lockdock(app, "pin", args.registry, env=env)
    lockdock(app, "pin", args.registry, "--check", env=env)
    pinned = dockerfile.read_text(encoding="utf-8").splitlines()[0].split()[1]
    print(f"\n{dockerfile}:\n{dockerfile.read_text(encoding='utf-8')}")
    print(f"pinned reference: {pinned}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as failed:
        print(f"demo: failed: {' '.join(map(str, failed.cmd[3:]))} exited {failed.returncode}",
              file=sys.stderr)
        sys.exit(failed.returncode or 1)
