"""The gate payload on the host's PyTorch: it passes as is, and each injected fault makes
exactly its gate fail (a gate that cannot fail is a defect).

Each run is the real payload (``tests/image``) in a fresh ``python -m pytest``, the way the
image runs it, with results parsed by ``lockdock.gates`` as ``lockdock test`` parses them.
Faults come from the test-only plugin ``tests/gate_faults/lockdock_gate_faults.py``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lockdock import gates

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = ROOT / "tests" / "image"
FAULTS = ROOT / "tests" / "gate_faults"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch is not installed in this environment (pip install torch==2.13.0)",
)


@dataclass(frozen=True)
class PayloadRun:
    report: gates.GateReport
    seconds: float
    output: str

    def failed_ids(self) -> set[str]:
        return {case.test_id for case in self.report.failed}

    def failed_checks(self) -> list[gates.Observation]:
        return [o for o in self.report.observations if not o.ok]


def host_expectations(**overrides: str) -> gates.Expectations:
    """What the host's environment is, as the labels/lock would say for a cpu image;
    ``overrides`` (flavor, python, torch, prefix, cuda) make it say something else."""
    values: dict[str, Any] = {
        "flavor": "cpu",
        "python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
        "prefix": sys.prefix,
    }
    cuda = overrides.pop("cuda", "none")
    rocm = overrides.pop("rocm", None)
    values.update(overrides)
    kind = "rocm" if rocm else "cpu" if cuda == "none" else "cuda"
    values["accelerator"] = {"LOCKDOCK_EXPECT_ACCELERATOR": kind, "LOCKDOCK_EXPECT_CUDA": cuda,
                             **({"LOCKDOCK_EXPECT_ROCM": rocm} if rocm else {})}
    return gates.Expectations(**values)


def run_payload(
    results: Path, expected: gates.Expectations, fault: str | None = None
) -> PayloadRun:
    results.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKDOCK_")}
    env.update(expected.as_environment())
    env.update(LOCKDOCK_GATES_RESULTS=str(results), PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", str(PAYLOAD), f"--junitxml={results / 'junit.xml'}"]
    if fault:
        env["LOCKDOCK_GATES_FAULT"] = fault
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAULTS), env.get("PYTHONPATH")]))
        command += ["-p", "lockdock_gate_faults"]
    started = time.monotonic()
    process = subprocess.run(
        command, cwd=results, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    seconds = time.monotonic() - started
    output = process.stdout + process.stderr
    image = gates.ImageUnderTest(
        reference="host", digest="sha256:" + "0" * 64, flavor=expected.flavor, platform="host"
    )

    def load(name: str) -> Any:
        path = results / name
        return json.loads(path.read_text()) if path.is_file() else None

    junit = results / "junit.xml"
    report = gates.build_report(
        image,
        expected,
        junit=junit.read_text() if junit.is_file() else None,
        observations=load("observations.json"),
        fingerprint=load("fingerprint.json"),
        gpu=False,
        exit_code=process.returncode,
        log_tail=output[-3000:],
    )
    return PayloadRun(report=report, seconds=seconds, output=output)


@pytest.fixture(scope="module")
def happy_run(tmp_path_factory: pytest.TempPathFactory) -> PayloadRun:
    return run_payload(tmp_path_factory.mktemp("gates-happy"), host_expectations())


def test_payload_passes_on_host_torch(happy_run: PayloadRun, record_property: Any) -> None:
    record_property("payload_wall_seconds", round(happy_run.seconds, 1))
    print(f"\ngate payload wall time on the host: {happy_run.seconds:.1f} s")
    report = happy_run.report
    assert report.passed, (report.problems, [c.test_id for c in report.failed], happy_run.output)
    assert report.exit_code == 0
    # Every gate ran something here; only GPU checks skip, each with its reason.
    for gate in gates.REQUIRED_GATES:
        assert any(c.gate == gate and c.outcome == "passed" for c in report.cases), gate
    skipped = [c for c in report.cases if c.outcome == "skipped"]
    assert skipped and all("CUDA" in c.message or "ROCm" in c.message for c in skipped), [
        c.message for c in skipped]
    # The checklist rows the report promises are there, each with an observed value.
    checks = {o.check for o in report.observations}
    for wanted in (
        "determinism hash (sha256 of every state_dict tensor) equal",
        "initial loss ≈ ln k, k=4 (cpu)",
        "gradients present (cpu)",
        "gradient magnitude (cpu)",
        "outputs finite (cpu)",
        "PyTorch build matches flavor",
    ):
        assert wanted in checks
    assert all(o.ok for o in report.observations)
    # The numerics fingerprint: determinism hash and reference outputs for the CPU.
    cpu = report.fingerprint["devices"]["cpu"]
    assert len(cpu["determinism"]["state_sha256"]) == 64
    assert {"matmul_float64", "conv2d_float32", "sdpa_float32"} <= set(cpu["reference_outputs"])
    markdown = gates.render_markdown(report)
    assert "— PASSED" in markdown and "| determinism |" in markdown


SAME_SEED = "test_determinism::test_same_seed_is_bitwise_identical_across_processes[cpu]"
GRADCHECK_CUSTOM = "test_gradients::test_gradcheck[cpu-custom_function]"

#: fault -> (payload expectations, the test ids that must fail, a check that must read false).
#: Faults whose name is in DATA_FAULTS change only the expectations (no plugin code).
FAULT_CASES: dict[str, tuple[dict[str, str], set[str], str]] = {
    # determinism
    "nondeterministic-op": ({}, {SAME_SEED}, "losses bitwise equal in two fresh processes"),
    "loss-drift-1e-7": ({}, {SAME_SEED}, "losses bitwise equal in two fresh processes"),
    "buffer-drift": (
        {}, {SAME_SEED}, "determinism hash (sha256 of every state_dict tensor) equal"
    ),
    "deterministic-mode-off-in-training": (
        {}, {SAME_SEED}, "reproducibility settings in the training process"
    ),
    "seed-ignored": (
        {},
        {"test_determinism::test_different_seed_changes_the_result[cpu]"},
        "control: another seed gives another hash",
    ),
    "deterministic-switch-ignored": (
        {},
        {"test_determinism::test_op_without_deterministic_implementation_raises[cpu]"},
        "control: nondeterministic op raises under deterministic mode",
    ),
    # gradients
    "wrong-backward": ({}, {GRADCHECK_CUSTOM}, "gradcheck custom_function (float64, cpu)"),
    "backward-1pct-off": ({}, {GRADCHECK_CUSTOM}, "gradcheck custom_function (float64, cpu)"),
    "wrong-double-backward": (
        {},
        {"test_gradients::test_gradgradcheck[cpu-custom_function]"},
        "gradgradcheck custom_function (float64, cpu)",
    ),
    "module-gradient-1pct-off": (
        {},
        {"test_gradients::test_module_gradients_match_central_differences[cpu]"},
        "functional_call parameter gradients vs central differences (cpu)",
    ),
    "detached-parameter": (
        {},
        {"test_gradients::test_every_trainable_parameter_has_a_gradient[cpu]"},
        "gradients present (cpu)",
    ),
    "bypassed-submodule": (
        {},
        {"test_gradients::test_every_trainable_parameter_has_a_gradient[cpu]"},
        "gradients present (cpu)",
    ),
    "dead-parameter": (
        {},
        {"test_gradients::test_gradients_finite_with_sane_magnitude[cpu]"},
        "gradient magnitude (cpu)",
    ),
    "overconfident-init": (
        {},
        {"test_gradients::test_initial_loss_near_ln_k[cpu]"},
        "initial loss ≈ ln k, k=4 (cpu)",
    ),
    "ascending-optimizer": (
        {},
        {"test_gradients::test_sgd_steps_reduce_loss[cpu]"},
        "SGD reduces loss on a separable task (cpu)",
    ),
    # environment
    "cuda-without-cuda": (
        {"flavor": "cuda", "cuda": "12.8"},
        {
            "test_environment::test_torch_build_matches_flavor",
            "test_environment::test_cuda_version",
        },
        "PyTorch build matches flavor",
    ),
    "cuda-torch-in-cpu-image": (
        {},
        {"test_environment::test_torch_build_matches_flavor"},
        "PyTorch build matches flavor",
    ),
    "rocm-without-rocm": (
        {"rocm": "6.2"},
        {"test_environment::test_rocm_version"},
        "ROCm (HIP) version PyTorch was built with",
    ),
    "wrong-python": (
        {"python": "3.10"}, {"test_environment::test_python_version"}, "Python version"
    ),
    "wrong-torch": (
        {"torch": "2.12.0"}, {"test_environment::test_torch_version"}, "PyTorch version"
    ),
    "wrong-prefix": (
        {"prefix": "/opt/not-the-locked-env"},
        {"test_environment::test_interpreter_is_the_locked_environment"},
        "interpreter prefix",
    ),
}  # fmt: skip
DATA_FAULTS = {"cuda-without-cuda", "rocm-without-rocm", "wrong-python", "wrong-torch",
               "wrong-prefix"}


def test_every_plugin_fault_has_a_case() -> None:
    sys.path.insert(0, str(FAULTS))
    try:
        import lockdock_gate_faults
    finally:
        sys.path.remove(str(FAULTS))
    assert set(lockdock_gate_faults.FAULTS) == set(FAULT_CASES) - DATA_FAULTS


@pytest.mark.parametrize("fault", list(FAULT_CASES))
def test_fault_fails_exactly_its_gate(
    fault: str, tmp_path: Path, happy_run: PayloadRun, record_property: Any
) -> None:
    overrides, must_fail, failing_check = FAULT_CASES[fault]
    expected = host_expectations(**overrides)
    plugin_fault = None if fault in DATA_FAULTS else fault
    run = run_payload(tmp_path, expected, plugin_fault)
    record_property("payload_wall_seconds", round(run.seconds, 1))
    assert run.report.exit_code == 1, run.output[-3000:]
    assert run.failed_ids() == must_fail, run.output[-3000:]
    assert failing_check in {o.check for o in run.failed_checks()}
    assert not run.report.passed
    record = gates.gate_record(run.report)
    assert record["passed"] is False and set(record["failed"]) == must_fail
    # Everything the fault does not touch still passes, as in the clean run.
    clean_passed = {c.test_id for c in happy_run.report.cases if c.outcome == "passed"}
    now_passed = {c.test_id for c in run.report.cases if c.outcome == "passed"}
    assert now_passed == clean_passed - must_fail
