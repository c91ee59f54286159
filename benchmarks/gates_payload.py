"""Wall time of the gate payload (tests/image) on this machine's PyTorch, per gate module.

Runs the payload the way ``lockdock test`` runs it in an image — a fresh ``python -m pytest``
on tests/image — ``--runs`` times, and prints the median seconds of the whole run and of each
gate (from the JUnit XML's test times). The CPU target is under a minute on 2 cores.

    python benchmarks/gates_payload.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from lockdock.gates import parse_junit

PAYLOAD = Path(__file__).resolve().parents[1] / "tests" / "image"


def run_once() -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "junit.xml"
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "pytest", str(PAYLOAD), "-q", f"--junitxml={junit}"],
            cwd=scratch,
            env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            check=True,
        )
        wall = time.monotonic() - started
        per_gate: dict[str, float] = defaultdict(float)
        for case in parse_junit(junit.read_text()):
            per_gate[case.gate] += case.seconds
        return wall, dict(per_gate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    walls, gates = [], defaultdict(list)
    for _ in range(args.runs):
        wall, per_gate = run_once()
        walls.append(wall)
        for gate, seconds in per_gate.items():
            gates[gate].append(seconds)
    print(f"gate payload on {sys.executable}, {args.runs} runs (median seconds)")
    print(f"{'part':<14}{'median s':>10}{'min s':>10}{'max s':>10}")
    for name, values in [("whole run", walls), *sorted(gates.items())]:
        print(
            f"{name:<14}{statistics.median(values):>10.1f}{min(values):>10.1f}{max(values):>10.1f}"
        )


if __name__ == "__main__":
    main()
