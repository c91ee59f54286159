"""`nox -s demo` end to end: ci/demo.py runs the whole offline pipeline and ends pinned.

The nox session is a thin wrapper around ci/demo.py, so this runs the script itself (in the
test's interpreter, which has the test extras the demo needs) with its own work folder and
repository, and checks the promise: every step ran and the last line is a digest-pinned
reference to what was published.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.network]

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "127.0.0.1:5000/lockdock-test-demo"


def test_demo_runs_every_step_and_ends_with_the_pinned_reference(
    engine: object, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "ci" / "demo.py"), "--workdir", str(tmp_path / "demo"),
         "--registry", REPOSITORY],
        capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = re.findall(r"^==> \[(\d)/9\]", proc.stdout, re.MULTILINE)
    assert steps == [str(n) for n in range(1, 10)]
    last = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(rf"pinned reference: {re.escape(REPOSITORY)}:cpu@(sha256:[0-9a-f]{{64}})",
                         last)
    assert match, last
    record = json.loads((tmp_path / "demo/project/images.lock.json").read_text())
    assert [entry["digest"] for entry in record["images"]] == [match.group(1)]
    dockerfile = (tmp_path / "demo/app/Dockerfile").read_text()
    assert dockerfile.startswith(f"FROM {REPOSITORY}:cpu@{match.group(1)}\n")

