"""Image build benchmark: cold build, no-op, non-environment change and one-package relock
rebuilds, bytes pushed after the relock, install vs raw decompression, gzip vs zstd (size,
cold build, push to an empty registry).

Runs the demo project (``lockdock.testing.demo``: the local channel with the packaged CPython,
pip torch CPU) on the debootstrap base image; needs root, the engine and its registry
(``ci/engine start``).

    python benchmarks/build.py [--repeat N] [--no-torch] [--compression gzip,zstd]

Every ratio is taken from figures measured in this one run; times are medians of N runs
(default 3). The relock bumps ``hello`` 1.0 -> 1.1 (a small package: one bucket + the shared slot).
A second relock bumps ``midsize`` 1.0 -> 1.1 (4 MiB of random base64 text, which gzip
shrinks to about 3/4: a bucket of its own size) for the bytes pushed per installed byte of
the changed layers when the package is not dwarfed by the lock and SBOM files.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from lockdock.context import resolve_flavor
from lockdock.facts import ENV_PREFIX
from lockdock.image.build import BuildResult
from lockdock.image.build import build as build_image
from lockdock.inspect import first_slot_layer, shipped_report
from lockdock.installer import install
from lockdock.installer.layer_plan import SHARED_SLOT, SLOTS
from lockdock.installer.lockfile import read_lock
from lockdock.installer.store import artifact_path
from lockdock.testing import BUILD_TIMESTAMP, ChannelServer, FakePackage, build_channel
from lockdock.testing.baseimage import ensure_base_image, ensure_engine
from lockdock.testing.demo import (
    CHANNEL_NAME,
    CPU_TORCH,
    build_demo_channel,
    demo_environment,
    environment_yml,
    mirror_option,
    write_demo_project,
)
from lockdock.testing.installs import decompress_artifacts
from lockdock.workspace import Workspace

NAME = "lockdock-bench/cpu"
REGISTRY = "127.0.0.1:5000"
#: The relocks' new builds are a month newer, as conda-forge's are: the relock moves the
#: lock's SOURCE_DATE_EPOCH (and so the image config's `created`), as a real relock does.
NEXT_TIMESTAMP = BUILD_TIMESTAMP + 30 * 86400
HELLO_NEXT = FakePackage("hello", "1.1", build="0", files={"share/hello/version": "1.1\n"},
                         timestamp=NEXT_TIMESTAMP)


def _midsize(version: str) -> FakePackage:
    """4 MiB of random (seeded) base64 text: a package whose layer is its own bytes."""
    rng = random.Random(version)
    text = base64.b64encode(rng.randbytes(3 * 1024 * 1024)).decode("ascii")
    return FakePackage("midsize", version, build="0", files={"share/midsize/data.txt": text},
                       timestamp=BUILD_TIMESTAMP if version == "1.0" else NEXT_TIMESTAMP)


MIDSIZE = (_midsize("1.0"), _midsize("1.1"))


def _cli(project: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "lockdock.cli", "-C", str(project), *args],
                   check=True, env=demo_environment(), capture_output=True)


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def decompress(project: Path, dest: Path) -> float:
    """Seconds to merely extract every artifact of the lock (one thread, no install)."""
    lock = project / "conda-lock.yml"
    store = Workspace(project).store
    files = [artifact_path(store, a) for a in read_lock(lock).select("linux-64", ["main"])]
    seconds = _timed(lambda: decompress_artifacts(files, dest))
    shutil.rmtree(dest)
    return seconds


def host_install(project: Path, dest: Path) -> float:
    """Seconds of the installer on the host (offline, the fetched store), then removed."""
    seconds = _timed(lambda: install.install(project / "conda-lock.yml", dest / "env",
                                             platform="linux-64", offline=True,
                                             store=Workspace(project).store))
    shutil.rmtree(dest)
    return seconds


def manifest_layers(reference: str) -> list[tuple[str, int]]:
    """(digest, compressed size) of each layer of a pushed image (registry manifest)."""
    raw = json.loads(_docker("buildx", "imagetools", "inspect", "--raw", reference))
    if "manifests" in raw:  # an index: the linux/amd64 manifest
        digest = next(m["digest"] for m in raw["manifests"]
                      if m.get("platform", {}).get("architecture") == "amd64")
        raw = json.loads(_docker("buildx", "imagetools", "inspect", "--raw",
                                 f"{reference.rsplit(':', 1)[0]}@{digest}"))
    return [(layer["digest"], int(layer["size"])) for layer in raw["layers"]]


@contextlib.contextmanager
def empty_registry(storage: Path) -> Iterator[str]:
    """A throwaway registry (Debian's docker-registry, as ``ci/engine`` starts) on a free
    loopback port with empty storage, for push times: the engine's registry already holds
    every blob of an earlier run, and a push there uploads nothing (dockerd also mounts
    blobs it has pushed to another repository of the same registry)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    storage.mkdir(parents=True)
    config = storage / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {storage}/data\nhttp:\n  addr: {address}\n")
    server = subprocess.Popen(["docker-registry", "serve", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://{address}/v2/", timeout=1).close()
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"the throwaway registry on {address} did not answer")
        yield address
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(storage, ignore_errors=True)


def push(local: str, remote: str) -> float:
    _docker("tag", local, remote)
    return _timed(lambda: _docker("push", remote))


def changed_installed_bytes(old: str, new: str) -> int:
    """Installed bytes of the slots whose packages differ between two images' reports."""
    reports = [shipped_report(ref) for ref in (old, new)]
    before = {s["slot"]: s for s in reports[0]["slots"]}
    return sum(int(s["installed_bytes"]) for s in reports[1]["slots"]
               if s["packages"] != before[s["slot"]]["packages"])


def package_slot_bytes(layers: list[tuple[str, int]], old_layers: set[str]) -> int:
    """Of the layers ``old_layers`` lacks, the compressed bytes of the package slots: not the
    shared slot, lock and SBOM layers, which every relock changes whatever its size."""
    first = first_slot_layer(len(layers))
    package = {first + slot for slot in range(SLOTS) if slot != SHARED_SLOT}
    return sum(size for index, (digest, size) in enumerate(layers)
               if index in package and digest not in old_layers)  # fmt: skip


def update_bytes(old: str, old_layers: set[str], new: str,
                 remote: str) -> tuple[int, int, int]:  # fmt: skip
    """(bytes a registry holding ``old`` receives when ``new`` is pushed as ``remote``, the
    part of them in package slots, installed bytes of the slots whose packages differ)."""
    push(new, remote)
    layers = manifest_layers(remote)
    pushed = sum(size for digest, size in layers if digest not in old_layers)
    return pushed, package_slot_bytes(layers, old_layers), changed_installed_bytes(old, new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="a small environment only")
    parser.add_argument("--compression", default="gzip,zstd")
    args = parser.parse_args()
    problem = ensure_engine()
    if problem:
        print(f"no engine: {problem}", file=sys.stderr)
        return 1
    base = ensure_base_image()
    pip = () if args.no_torch else (CPU_TORCH, "numpy")
    times: dict[str, list[float]] = {}

    def record(what: str, seconds: float) -> None:
        times.setdefault(what, []).append(seconds)
        print(f"{what}: {seconds:.1f} s", file=sys.stderr, flush=True)

    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="lockdock-bench.") as tmp:
        served = Path(tmp) / "served"
        channel = build_demo_channel(served)
        build_channel(channel, [HELLO_NEXT, *MIDSIZE])
        with ChannelServer(served) as server:
            mirror = mirror_option(f"{server.url}/{CHANNEL_NAME}")
            project = write_demo_project(Path(tmp) / "project", pip=pip,
                                         conda=("hello 1.0.*", "tinylib", "midsize 1.0.*"))
            old_env = (project / "environment.yml").read_text()
            new_env = environment_yml(pip, ("hello 1.1.*", "tinylib", "midsize 1.0.*"))
            mid_env = environment_yml(pip, ("hello 1.0.*", "tinylib", "midsize 1.1.*"))
            locks = []
            for env_text in (old_env, new_env, mid_env):
                (project / "environment.yml").write_text(env_text)
                _cli(project, "lock", "cpu", *mirror)
                _cli(project, "fetch", "cpu")
                locks.append((project / "conda-lock.yml").read_text())
            old_lock, new_lock, mid_lock = locks

        def use(lock_text: str, env_text: str) -> None:
            (project / "conda-lock.yml").write_text(lock_text)
            (project / "environment.yml").write_text(env_text)

        def build(**options: object) -> BuildResult:
            return build_image(resolve_flavor(project, "cpu"), base_image=base, name=NAME,
                               **options)  # type: ignore[arg-type]

        dockerfile = project / "images/cpu/Dockerfile"
        original = dockerfile.read_text()
        compressions = args.compression.split(",")

        def cold(compression: str, run: int) -> None:
            # An empty build cache, cache mounts included (the builder's pyc cache): each
            # cold build compiles everything, and the relock rebuild after it finds the old
            # lock's layers only, not the new lock's from the previous repeat.
            _docker("builder", "prune", "--all", "--force")
            record(f"cold build, {compression}",
                   _timed(lambda: build(force=True, no_cache=True, compression=compression)))
            with empty_registry(Path(tmp) / f"registry-{compression}-{run}") as registry:
                remote = f"{registry}/{NAME}-{compression}:old"
                record(f"push to an empty local registry, {compression}",
                       push(build(compression=compression).reference, remote))
                sizes[f"image, {compression}"] = sum(s for _, s in manifest_layers(remote))
                _docker("image", "rm", remote)
        first, *others = compressions
        for run in range(args.repeat):
            use(old_lock, old_env)
            record("decompress artifacts (1 thread)", decompress(project, Path(tmp) / "x"))
            record("install on the host", host_install(project, Path(tmp) / "i"))
            cold(first, run)
            record("no-op rebuild (tag exists)", _timed(build))
            dockerfile.write_text(original + f'RUN echo "change {run}" > /home/lockdock/motd\n')
            record("rebuild after a non-environment change", _timed(lambda: build(force=True)))
            dockerfile.write_text(original)
            old_ref = build(force=True).reference  # the image without the change again
            use(new_lock, new_env)
            record("rebuild after a one-package relock", _timed(lambda: build(force=True)))
            new_ref = build().reference
            remote = f"{REGISTRY}/{NAME}-relock"
            push(old_ref, f"{remote}:old-{run}")
            old_layers = {d for d, _ in manifest_layers(f"{remote}:old-{run}")}
            (sizes["pushed after the relock"], sizes["of which package slots"],
             sizes["installed bytes of the changed slots"]) = update_bytes(
                old_ref, old_layers, new_ref, f"{remote}:new-{run}")
            use(mid_lock, mid_env)
            (sizes["pushed after the midsize relock"], sizes["of which package slots (midsize)"],
             sizes["installed bytes of the changed slots (midsize)"]) = update_bytes(
                old_ref, old_layers, build().reference, f"{remote}:mid-{run}")
            # Other compressions last: their blobs in the cache would be converted back for
            # the builds above, and a converted blob need not be the original's bytes.
            use(old_lock, old_env)
            for compression in others:
                cold(compression, run)
        use(old_lock, old_env)
        reference = build().reference
        sizes["environment on disk"] = int(_docker("run", "--rm", reference, "du", "-sb",
                                                   ENV_PREFIX).split()[0])
        for tag in _docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").split():
            if tag.startswith((NAME, f"{REGISTRY}/{NAME}")):
                _docker("image", "rm", tag)

    med = {what: statistics.median(values) for what, values in times.items()}
    print("| step | median | runs |")
    print("|---|---:|---:|")
    for what, values in times.items():
        print(f"| {what} | {med[what]:8.1f} s | {len(values)} |")
    print()
    print("| size | bytes | MiB |")
    print("|---|---:|---:|")
    for what, size in sizes.items():
        print(f"| {what} | {size} | {size / 2**20:.1f} |")
    cold_build = med[f"cold build, {compressions[0]}"]
    decompression = med["decompress artifacts (1 thread)"]
    print()
    print(f"cold build ({compressions[0]}) / decompression: {cold_build / decompression:.2f}")
    relock = med["rebuild after a one-package relock"]
    print(f"relock rebuild / cold build: {relock / cold_build:.2%}")
    for case, suffix in (("relock", ""), ("midsize relock", " (midsize)")):
        pushed = sizes[f"pushed after the {case}"]
        package = sizes[f"of which package slots{suffix}"]
        installed = sizes[f"installed bytes of the changed slots{suffix}"]
        print(f"bytes pushed after the {case} / installed bytes of the changed slots: "
              f"{pushed / installed:.2f}")
        print(f"package-slot bytes pushed after the {case} / their installed bytes: "
              f"{package / installed:.2f} (the rest: the shared slot, lock and SBOM layers, "
              f"{pushed - package} B)")
    print(f"host install / decompression: {med['install on the host'] / decompression:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
