"""The benchmark scripts run to the end and print their tables.

No test ran them, and ``benchmarks/install.py`` once could not start at all (its folder's
``build.py`` shadowed PyPI's ``build``) with nothing to notice. Each runs once, small: the
figures are not checked (never a timed assertion), only that every row and ratio is printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lockdock.testing.cpython import packaging_problem

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> str:
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=1500)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.engine
@pytest.mark.network
def test_build_benchmark_prints_every_step_size_and_ratio(engine: object) -> None:
    out = _run(str(ROOT / "benchmarks/build.py"), "--repeat", "1", "--no-torch")
    steps = dict(re.findall(r"^\| ([^|]+?) \| +([0-9.]+) s \| 1 \|$", out, re.MULTILINE))
    assert set(steps) == {
        "decompress artifacts (1 thread)", "install on the host", "cold build, gzip",
        "push to an empty local registry, gzip", "no-op rebuild (tag exists)",
        "rebuild after a non-environment change", "rebuild after a one-package relock",
        "cold build, zstd", "push to an empty local registry, zstd",
    }, out  # fmt: skip
    sizes = dict(re.findall(r"^\| ([^|]+?) \| (\d+) \| [0-9.]+ \|$", out, re.MULTILINE))
    # An empty registry receives the whole image: every layer, the base's included.
    assert int(sizes["image, gzip"]) > 10_000_000 and int(sizes["image, zstd"]) > 10_000_000
    assert 0 < int(sizes["pushed after the relock"]) < int(sizes["image, gzip"])
    for ratio in ("cold build (gzip) / decompression", "relock rebuild / cold build",
                  "host install / decompression"):  # fmt: skip
        assert re.search(rf"^{re.escape(ratio)}: [0-9.]+%?$", out, re.MULTILINE), out


@pytest.mark.network
def test_install_benchmark_prints_install_and_decompress(tmp_path: Path) -> None:
    problem = packaging_problem()
    if problem:
        pytest.skip(f"cannot package this CPython: {problem}")
    out = _run(str(ROOT / "benchmarks/install.py"), "--runs", "1", "--work", str(tmp_path))
    assert re.search(r"^\| install \(lockdock\), total \| [0-9.]+ ", out, re.MULTILINE), out
    assert re.search(r"^\| decompress only \(1 thread\) \| [0-9.]+ ", out, re.MULTILINE), out
    assert re.search(r"^install / decompress = [0-9.]+x$", out, re.MULTILINE), out
