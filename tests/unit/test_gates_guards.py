"""Guards of the gate verdict and its report files, each the test that fails without it:
a check that recorded a failure while every test passed is not a pass, and a new report
replaces an old ``gate.json`` (never crashes on it, never leaves the old verdict when the
new run dies part-way)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockdock import gates
from lockdock.workspace import GATE_FILE

IMAGE = gates.ImageUnderTest(
    reference="lockdock/cpu:latest", digest="sha256:" + "1" * 64, flavor="cpu",
    platform="linux/amd64",
)  # fmt: skip
EXPECTED = gates.Expectations(flavor="cpu", python="3.12.7", torch="2.5.1",
                              accelerator={"LOCKDOCK_EXPECT_CUDA": "none"})


def _junit(failed: bool) -> str:
    cases = "".join(
        f'<testcase classname="test_{gate}" name="test_{gate}_check" time="0.1"/>'
        for gate in gates.REQUIRED_GATES
        if not (failed and gate == "gradients")
    )
    if failed:
        cases += (
            '<testcase classname="test_gradients" name="test_gradients_check" time="0.1">'
            '<failure message="gradcheck: mismatch">trace</failure></testcase>'
        )
    return f"<testsuites><testsuite name='pytest'>{cases}</testsuite></testsuites>"


def _observations(ok: bool) -> dict[str, object]:
    return {
        "schema": 1,
        "environment": {"python": "3.12.7", "torch": "2.5.1"},
        "observations": [
            {"gate": "gradients", "test": "test_gradients.py::test_gradients_check",
             "check": "gradcheck matmul (float64, cpu)", "expected": "match",
             "observed": "match" if ok else "mismatch", "ok": ok},
        ],
    }  # fmt: skip


def _report(*, junit_failed: bool, check_ok: bool) -> gates.GateReport:
    return gates.build_report(
        IMAGE, EXPECTED, junit=_junit(junit_failed), observations=_observations(check_ok),
        fingerprint={}, gpu=False, exit_code=1 if junit_failed else 0,
    )  # fmt: skip


def test_a_failed_check_with_every_test_passing_is_not_a_pass() -> None:
    clean = _report(junit_failed=False, check_ok=True)
    assert clean.passed and clean.problems == ()  # the control: same run, check ok
    report = _report(junit_failed=False, check_ok=False)
    assert not report.failed  # no test failed ...
    assert "a check recorded a failure but no test failed" in report.problems
    assert not report.passed and gates.gate_record(report)["passed"] is False


def test_a_new_report_replaces_an_old_gate_json(tmp_path: Path) -> None:
    gates.write_report(_report(junit_failed=False, check_ok=True), tmp_path, None)
    assert json.loads((tmp_path / GATE_FILE).read_text())["passed"] is True
    gates.write_report(_report(junit_failed=True, check_ok=False), tmp_path, None)
    record = json.loads((tmp_path / GATE_FILE).read_text())
    assert record["passed"] is False
    assert record["failed"] == ["test_gradients::test_gradients_check"]
    gates.write_report(_report(junit_failed=False, check_ok=True), tmp_path, None)
    assert json.loads((tmp_path / GATE_FILE).read_text())["passed"] is True


def test_a_run_that_dies_before_its_verdict_leaves_no_old_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gates.write_report(_report(junit_failed=False, check_ok=True), tmp_path, None)
    assert (tmp_path / GATE_FILE).is_file()

    def crash(path: Path, text: str, *args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(path))

    import lockdock.workspace

    monkeypatch.setattr(lockdock.workspace, "write_text_atomic", crash)
    with pytest.raises(OSError, match="No space left"):
        gates.write_report(_report(junit_failed=True, check_ok=False), tmp_path, None)
    assert not (tmp_path / GATE_FILE).exists()  # publish finds no verdict to trust
