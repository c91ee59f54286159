"""End to end on the real engine: the gates inside a built cpu image, through the CLI.

The demo project (``lockdock.testing.demo``: local channel mirroring conda-forge, pip torch
CPU + JupyterLab + numpy + pytest, the debootstrap base image) is locked, fetched and built
with ``lockdock build`` once per session (tests/fixtures/images.py, shared with the other
engine modules), then ``lockdock test cpu`` runs tests/image inside it (read-only mount,
no network, non-root, read-only root file system). Checked: the report and gate.json for the
image's exact digest, publish's acceptance of it, the step summary; and a real failure: the
same CPU image gated as flavor ``cuda`` (a "CUDA" image whose torch has no CUDA) fails the
environment gate with exit 11 and still writes its report.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockdock import publish_plan
from lockdock.testing.flavors import STANDARD_FLAVORS
from lockdock.workspace import Workspace
from tests.fixtures.images import DemoImage
from tests.helpers import lockdock_process as lockdock
from tests.helpers import succeeded as ok

pytestmark = [pytest.mark.engine, pytest.mark.network]

@dataclass(frozen=True)
class Built:
    root: Path
    reference: str
    digest: str






@pytest.fixture(scope="module")
def gated_image(demo_image: DemoImage) -> Built:
    """The session's shared demo image (not modified here: reports go under its project)."""
    return Built(demo_image.root, demo_image.reference, demo_image.digest)


def test_gates_pass_in_the_cpu_image(gated_image: Built, tmp_path: Path) -> None:
    summary = tmp_path / "step-summary.md"
    proc = ok(lockdock(gated_image.root, "test", "cpu", env={"GITHUB_STEP_SUMMARY": str(summary)}))
    out = Workspace(gated_image.root).report_dir("cpu", gated_image.digest)
    record = json.loads((out / "gate.json").read_text())
    print(f"\n{proc.stderr.strip().splitlines()[-1]}\n{(out / 'report.md').read_text()}")
    assert record["passed"] is True, record
    assert record["image_digest"] == gated_image.digest
    assert record["image_ref"] == gated_image.reference  # default: the last build
    assert (record["flavor"], record["platform"]) == ("cpu", "linux/amd64")
    assert record["counts"]["failed"] == record["counts"]["errors"] == 0
    assert record["expected"]["torch"] == "2.13.0+cpu" and record["expected"]["cuda"] == "none"
    observations = json.loads((out / "observations.json").read_text())
    environment = observations["environment"]
    assert environment["prefix"] == "/opt/conda/envs/lockdock"
    assert (environment["torch"], environment["torch_cuda"]) == ("2.13.0+cpu", None)
    assert all(row["ok"] for row in observations["observations"])
    gates_run = {row["gate"] for row in observations["observations"]}
    assert {"determinism", "gradients", "environment"} <= gates_run
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert len(fingerprint["devices"]["cpu"]["determinism"]["state_sha256"]) == 64
    assert "— PASSED" in (out / "report.md").read_text()
    assert summary.read_text() == (out / "report.md").read_text() + "\n"
    # publish accepts this report for this digest
    image = publish_plan.LocalImage(platform="linux/amd64", reference=gated_image.reference,
                               digest=gated_image.digest)
    assert publish_plan.gate_refusal(record, out / "gate.json", "cpu", image) is None


def test_cpu_torch_gated_as_cuda_fails_the_environment_gate(
    gated_image: Built, tmp_path: Path
) -> None:
    """The same image, claimed as flavor ``cuda``: exit 11, the report is still written."""
    root = tmp_path / "as-cuda"
    (root / "images").mkdir(parents=True)
    shutil.copy2(gated_image.root / "environment.yml", root / "environment.yml")
    shutil.copytree(gated_image.root / "images" / "base", root / "images" / "base")
    shutil.copytree(gated_image.root / "images" / "cpu", root / "images" / "cuda")
    # the same folder, declared a CUDA flavor (its lock: images/cuda/conda-lock.yml)
    (root / "images" / "cuda" / "flavor.toml").write_text(STANDARD_FLAVORS["cuda"])
    shutil.copy2(gated_image.root / "conda-lock.yml", root / "images" / "cuda" / "conda-lock.yml")
    proc = lockdock(root, "test", "cuda", "--image", gated_image.reference)
    assert proc.returncode == 11, proc.stderr[-4000:]
    assert "test_environment::test_torch_build_matches_flavor" in proc.stderr
    out = Workspace(root).report_dir("cuda", gated_image.digest)
    record = json.loads((out / "gate.json").read_text())
    assert record["passed"] is False
    assert record["failed"] == ["test_environment::test_torch_build_matches_flavor"]
    assert any("io.lockdock.flavor='cpu'" in problem for problem in record["problems"])
    report = (out / "report.md").read_text()
    assert "— FAILED" in report
    assert "| environment | PyTorch build matches flavor | flavor cuda: a CUDA build" in report
