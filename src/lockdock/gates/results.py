"""The payload's results: JUnit XML and ``observations.json`` into a verdict (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lockdock.errors import GateError
from lockdock.gates.expect import Expectations
from lockdock.workspace import JUNIT_FILE, OBSERVATIONS_FILE

#: The payload's gates (test module ``test_<gate>.py``) that must each have a passing test.
REQUIRED_GATES = ("determinism", "gradients", "environment")

GPU_GATE = "gpu"

@dataclass(frozen=True)
class CaseResult:
    classname: str
    name: str
    outcome: str  # passed | failed | error | skipped
    message: str = ""
    seconds: float = 0.0

    @property
    def test_id(self) -> str:
        return f"{self.classname}::{self.name}"

    @property
    def gate(self) -> str:
        return gate_of(self.classname)

@dataclass(frozen=True)
class Observation:
    gate: str
    test: str
    check: str
    expected: str
    observed: str
    ok: bool

def gate_of(test: str) -> str:
    """The gate a test belongs to: its module without ``test_`` (``test_gradients.py::x``,
    ``test_gradients`` or ``tests.image.test_gradients`` → ``gradients``)."""
    module = test.split("::", 1)[0].rsplit("/", 1)[-1].rsplit(".py", 1)[0].rsplit(".", 1)[-1]
    return module.removeprefix("test_")

def parse_junit(text: str, source: str = JUNIT_FILE) -> list[CaseResult]:
    """pytest's JUnit XML (xunit1 or xunit2) as test cases."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise GateError(f"The payload's JUnit XML {source} is not valid XML: {error}.") from None
    cases = []
    for element in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in element:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = child.get("message") or (child.text or "").strip()
                break
        cases.append(
            CaseResult(
                classname=element.get("classname", ""),
                name=element.get("name", ""),
                outcome=outcome,
                message=" ".join(message.split())[:500],
                seconds=float(element.get("time") or 0.0),
            )
        )
    return cases

def parse_observations(document: Mapping[str, Any]) -> tuple[list[Observation], dict[str, Any]]:
    rows = [
        Observation(
            gate=str(row["gate"]),
            test=str(row["test"]),
            check=str(row["check"]),
            expected=str(row["expected"]),
            observed=str(row["observed"]),
            ok=bool(row["ok"]),
        )
        for row in document.get("observations", ())
    ]
    return rows, dict(document.get("environment") or {})

@dataclass(frozen=True)
class ImageUnderTest:
    reference: str
    digest: str  # the engine's image id, as publish reads it
    flavor: str
    platform: str  # docker platform, linux/amd64
    labels: Mapping[str, str] = field(default_factory=dict)

@dataclass(frozen=True)
class GateReport:
    image: ImageUnderTest
    expected: Expectations
    cases: tuple[CaseResult, ...]
    observations: tuple[Observation, ...]
    environment: Mapping[str, Any]
    fingerprint: Mapping[str, Any]
    problems: tuple[str, ...]
    gpu: bool
    exit_code: int | None
    log_tail: str = ""

    @property
    def counts(self) -> dict[str, int]:
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        for case in self.cases:
            counts[{"error": "errors"}.get(case.outcome, case.outcome)] += 1
        return counts

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if c.outcome in ("failed", "error")]

    @property
    def passed(self) -> bool:
        return not self.failed and not self.problems

def verdict_problems(
    cases: Sequence[CaseResult],
    observations: Sequence[Observation],
    *,
    gpu: bool,
    exit_code: int | None,
    label_problems: Sequence[str] = (),
) -> list[str]:
    """Why the gates did not pass, beyond failed tests: a payload that did not run, a
    required gate with no passing test (all skipped), or labels that contradict the lock."""
    problems = list(label_problems)
    if exit_code not in (0, 1):  # pytest: 0 all passed, 1 some failed; else it did not run
        problems.append(f"the payload's pytest exited with code {exit_code}")
    if not cases:
        problems.append("the payload reported no test results (no JUnit XML test cases)")
        return problems
    required = [*REQUIRED_GATES, *([GPU_GATE] if gpu else [])]
    for gate in required:
        if not any(c.gate == gate and c.outcome == "passed" for c in cases):
            problems.append(f"gate {gate!r} has no passing test (all skipped or missing)")
    failed_observations = [o for o in observations if not o.ok]
    failed_tests = {c.test_id for c in cases if c.outcome in ("failed", "error")}
    if failed_observations and not failed_tests:
        problems.append("a check recorded a failure but no test failed")
    return problems

def build_report(
    image: ImageUnderTest,
    expected: Expectations,
    *,
    junit: str | None,
    observations: Mapping[str, Any] | None,
    fingerprint: Mapping[str, Any] | None,
    gpu: bool,
    exit_code: int | None,
    label_problems: Sequence[str] = (),
    log_tail: str = "",
) -> GateReport:
    cases = parse_junit(junit) if junit else []
    rows, environment = parse_observations(observations) if observations else ([], {})
    problems = verdict_problems(
        cases, rows, gpu=gpu, exit_code=exit_code, label_problems=label_problems
    )
    if observations is None and cases:
        problems.append(f"the payload wrote no {OBSERVATIONS_FILE}")
    return GateReport(
        image=image,
        expected=expected,
        cases=tuple(cases),
        observations=tuple(rows),
        environment=environment,
        fingerprint=dict(fingerprint or {}),
        problems=tuple(problems),
        gpu=gpu,
        exit_code=exit_code,
        log_tail=log_tail,
    )
