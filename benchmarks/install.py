"""Install time of the torch lock vs the time to just decompress the same artifacts.

    python benchmarks/install.py [--runs 3] [--work DIR]

The lock: the packaged CPython running this script (``lockdock.testing.cpython``) + the
local torch 2.13.0 CPU wheel and its dependencies (``pip download torch==2.13.0``), all
pinned by file:// URL + sha256 and fetched into a store first (fetch is not timed).

- ``install``: ``lockdock.installer.install.install(..., offline=True)`` (verify store hashes,
  rattler install, pip install with checked-hash pyc compilation, prefix verification);
- ``decompress``: unpack the same artifact files into a scratch folder in one thread
  (``lockdock.testing.installs.decompress_artifacts``: conda archives with py-rattler's
  extractor, wheels with ``zipfile``; benchmarks/build.py uses the same floor).

Prints medians and the install/decompress ratio, in wall-clock seconds and in CPU seconds
(user + system, this process and its children: the work each does, whatever the core count;
the install's byte-compilation runs in child processes). Disk writeback makes wall-clock
times on a slow disk vary several-fold between runs: ``--work /dev/shm/...`` (a tmpfs) times
the work alone.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lockdock.installer import install, store
from lockdock.installer.lockfile import read_lock
from lockdock.testing.cpython import build_cpython_package, packaging_problem
from lockdock.testing.installs import (
    TORCH_REQUIREMENT,
    conda_entry,
    decompress_artifacts,
    download_wheels,
    wheel_entry,
    write_lock,
)


def tree_size(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def cpu_seconds() -> float:
    """User + system seconds of this process and of its waited-for children so far."""
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


def unshadow_pypi_build() -> None:
    """Run as a script, this folder is ``sys.path[0]``: its ``build.py`` would shadow PyPI's
    ``build``, which conda-lock imports (``write_lock``) -- an ImportError at the first lock."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]


def main() -> int:
    unshadow_pypi_build()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: tmp)")
    args = parser.parse_args()
    problem = packaging_problem()
    if problem:
        print(f"skipped: cannot package this CPython: {problem}", file=sys.stderr)
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="lockdock-bench-install."))
    work.mkdir(parents=True, exist_ok=True)
    channel = work / "channel"
    python_pkg = next(channel.glob("*/python-*.tar.bz2"), None) or build_cpython_package(channel)
    wheels = sorted((work / "wheels").glob("*.whl")) or download_wheels(
        work / "wheels", [TORCH_REQUIREMENT], deps=True
    )
    lock = write_lock(
        work / "conda-lock.yml", [conda_entry(python_pkg), *(wheel_entry(w) for w in wheels)]
    )
    store_dir = work / "store"
    artifacts = store.lock_artifacts(read_lock(lock), ["linux-64"])
    store.fetch(artifacts, store_dir)
    files = [store.artifact_path(store_dir, a) for a in artifacts]
    artifact_bytes = sum(f.stat().st_size for f in files)

    prefix, scratch = work / "env", work / "unpacked"
    install_s, unpack_s, install_cpu, unpack_cpu = [], [], [], []
    phases: dict[str, list[float]] = {}
    for run in range(args.runs):
        for path in (prefix, scratch):
            shutil.rmtree(path, ignore_errors=True)
        os.sync()
        started, cpu = time.perf_counter(), cpu_seconds()
        report = install.install(lock, prefix, platform="linux-64", store=store_dir, offline=True)
        install_s.append(time.perf_counter() - started)
        install_cpu.append(cpu_seconds() - cpu)
        for phase, seconds in report.seconds.items():
            phases.setdefault(phase, []).append(seconds)

        os.sync()
        started, cpu = time.perf_counter(), cpu_seconds()
        decompress_artifacts(files, scratch)
        unpack_s.append(time.perf_counter() - started)
        unpack_cpu.append(cpu_seconds() - cpu)
        print(f"run {run + 1}: install {install_s[-1]:.1f} s, decompress {unpack_s[-1]:.1f} s",
              file=sys.stderr)  # fmt: skip

    med_install, med_unpack = statistics.median(install_s), statistics.median(unpack_s)
    size = tree_size(prefix) / 1e6
    print(f"\nTorch lock: {len(files)} artifacts, {artifact_bytes / 1e6:.0f} MB compressed, "
          f"prefix {size:.0f} MB, {args.runs} runs, cpus={os.cpu_count()}\n")  # fmt: skip
    print("| step | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    rows = [("install (lockdock), total", install_s)]
    rows += [(f"  install phase: {name}", values) for name, values in phases.items()]
    rows += [("decompress only (1 thread)", unpack_s)]
    rows += [("install, CPU seconds", install_cpu), ("decompress, CPU seconds", unpack_cpu)]
    for label, values in rows:
        print(f"| {label} | {statistics.median(values):.1f} | {min(values):.1f} | "
              f"{max(values):.1f} |")  # fmt: skip
    print(f"\ninstall / decompress = {med_install / med_unpack:.2f}x")
    work = statistics.median(install_cpu) / statistics.median(unpack_cpu)
    print(f"install / decompress, CPU seconds = {work:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
