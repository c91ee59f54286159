"""How the cost of `lockdock lock` grows with channel size: repodata load, solve, pip, write.

Generates conda channels of about 1k, 10k and 100k package records, serves each over
loopback HTTP (``lockdock.testing.ChannelServer``) and locks a project against it with a
cold repodata cache every run, through the same code as ``lockdock lock``
(``lockdock.lock.lock_project``). Prints the median seconds per phase.

The channels' ``repodata.json`` is generated directly: building 100k ``.conda`` files with
rattler-build would take far longer than the lock itself, and locking never downloads a
package (it reads url/sha256/md5 from repodata). The records are synthetic: ``pkgN`` has
several versions, each depending on a few lower-numbered packages with version bounds, so
the solver has real choices to make; the project asks for the top 25 packages + python.

The pip phase resolves ``requests==2.32.3`` against PyPI with uv (skipped with
``--no-pip`` or when PyPI is unreachable); after the first run uv answers from its cache,
so it measures resolution, not download.

    python benchmarks/lock.py [--sizes 1000,10000,100000] [--runs 5] [--no-pip]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import textwrap
import urllib.request
from pathlib import Path

from lockdock.lock import lock_project
from lockdock.solve import LockResult
from lockdock.spec import load_project
from lockdock.testing import ChannelServer

VERSIONS_PER_PACKAGE = 10


def _record(name: str, version: str, depends: list[str], subdir: str) -> dict[str, object]:
    digest = hashlib.sha256(f"{name}-{version}-{subdir}".encode()).hexdigest()
    return {
        "name": name,
        "version": version,
        "build": "h0_0",
        "build_number": 0,
        "depends": depends,
        "subdir": subdir,
        "md5": digest[:32],
        "sha256": digest,
        "size": 1000,
        "timestamp": 1704067200000,
    }


def generate_channel(directory: Path, records: int, seed: int = 0) -> int:
    """Write linux-64 and noarch repodata.json with about ``records`` records."""
    rng = random.Random(seed)
    packages = max(records // VERSIONS_PER_PACKAGE, 30)
    linux: dict[str, dict[str, object]] = {}
    for index in range(packages):
        for minor in range(VERSIONS_PER_PACKAGE):
            version = f"1.{minor}"
            depends = ["python >=3.11,<3.12"] if index % 7 == 0 else []
            for dep in rng.sample(range(index), k=min(index, 3)):
                depends.append(f"pkg{dep} >=1.{rng.randrange(VERSIONS_PER_PACKAGE // 2)}")
            record = _record(f"pkg{index}", version, depends, "linux-64")
            linux[f"pkg{index}-{version}-h0_0.conda"] = record
    for version in ("3.11.8", "3.11.9"):
        linux[f"python-{version}-h0_0.conda"] = _record("python", version, [], "linux-64")
    noarch = {"pip-24.0-h0_0.conda": _record("pip", "24.0", ["python >=3.8"], "noarch")}
    for subdir, entries in (("linux-64", linux), ("noarch", noarch)):
        (directory / subdir).mkdir(parents=True, exist_ok=True)
        repodata = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": entries}
        (directory / subdir / "repodata.json").write_text(json.dumps(repodata))
    return len(linux) + len(noarch)


def write_project(root: Path, channel_url: str, top: int, with_pip: bool) -> None:
    deps = "\n".join(f"  - pkg{i}" for i in range(top - 25, top))
    pip = "  - pip:\n    - requests==2.32.3\n" if with_pip else ""
    env = textwrap.dedent(f"""\
        channels:
          - {channel_url}
        platforms:
          - linux-64
        dependencies:
          - python 3.11.*
        """) + deps + "\n" + pip  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "environment.yml").write_text(env)
    (root / "images" / "cpu").mkdir(parents=True, exist_ok=True)
    (root / "images" / "cpu" / "Dockerfile").write_text("FROM scratch\n")


def pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/requests/", timeout=5).close()
    except OSError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-pip", action="store_true")
    args = parser.parse_args()
    with_pip = not args.no_pip and pypi_reachable()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lockdock-bench-") as scratch:
        root = Path(scratch)
        for size in (int(s) for s in args.sizes.split(",")):
            served = root / f"srv{size}"
            count = generate_channel(served / "bench", size)
            with ChannelServer(served) as server:
                project_dir = root / f"project{size}"
                write_project(project_dir, f"{server.url}/bench",
                              max(size // VERSIONS_PER_PACKAGE, 30), with_pip)  # fmt: skip
                project = load_project(project_dir)
                results: list[LockResult] = []
                for run in range(args.runs):
                    cache = root / f"cache{size}-{run}"  # cold repodata cache every run
                    (result,) = lock_project(project, cache_dir=cache)
                    results.append(result)
                    print(f"  {size:>7} records, run {run + 1}: {result.timings}", file=sys.stderr)
            conda, pip = results[-1].counts["linux-64"]
            t = [r.timings for r in results]
            rows.append((count, conda, pip,
                         statistics.median(x.repodata for x in t),
                         statistics.median(x.solve for x in t),
                         statistics.median(x.pip for x in t),
                         statistics.median(x.write for x in t)))  # fmt: skip
    print(f"\nlockdock lock, linux-64, median of {args.runs} runs, cold repodata cache "
          f"(pip: {'requests==2.32.3 via uv' if with_pip else 'skipped'})\n")  # fmt: skip
    header = ("records", "locked conda", "locked pip", "repodata s", "solve s", "pip s",
              "write s", "total s")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for count, conda, pip, repodata, solve, pip_s, write in rows:
        total = repodata + solve + pip_s + write
        print(f"| {count} | {conda} | {pip} | {repodata:.3f} | {solve:.3f} | {pip_s:.3f} | "
              f"{write:.3f} | {total:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
