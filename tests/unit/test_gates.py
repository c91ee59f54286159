"""Unit tests for lockdock.gates: expectations, JUnit/observations parsing, verdict, Markdown
report, gate.json (against publish's own check), report files, and the docker edge's
arguments. The payload itself is exercised in test_gates_faults.py (host) and
tests/engine/test_gates_engine.py (inside the cpu image)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lockdock import gates, publish_plan
from lockdock.accelerators import KINDS
from lockdock.engine import native_platform
from lockdock.errors import GateError, UsageError
from lockdock.facts import (
    FLAVOR_LABEL,
    LOCK_HASH_LABEL,
    PYTHON_LABEL,
    TORCH_LABEL,
    runtime_label,
)
from lockdock.gates.run import PAYLOAD_MOUNT, RESULTS_MOUNT
from lockdock.installer.lockfile import LockedArtifact
from lockdock.testing.flavors import write_flavor
from lockdock.workspace import GATE_FILE, STATE_DIR, Workspace


def artifact(name: str, version: str, manager: str = "conda") -> LockedArtifact:
    return LockedArtifact(
        name=name,
        version=version,
        manager=manager,
        platform="linux-64",
        url=f"https://example.invalid/{name}-{version}.conda",
        sha256="0" * 64,
        md5=None,
        categories=frozenset({"main"}),
    )


REPO_ROOT = Path(__file__).resolve().parents[2]


# --- expectations ---------------------------------------------------------------------------


def test_expectations_from_a_pip_cuda_torch_lock() -> None:
    expected, problems = gates.expectations(
        "cuda", KINDS["cuda"],
        [
            artifact("python", "3.11.9"),
            artifact("torch", "2.13.0", "pip"),
            artifact("nvidia-cuda-runtime-cu12", "12.8.90", "pip"),
        ],
        {runtime_label("cuda"): "12.8", FLAVOR_LABEL: "cuda"},
    )
    assert problems == []
    assert (expected.python, expected.torch, expected.cuda) == ("3.11.9", "2.13.0", "12.8")


def test_expectations_cpu_torch_in_a_cuda_flavor_still_expects_a_cuda_build() -> None:
    """A CUDA image whose lock carries a CPU torch: no CUDA version, but flavor cuda, so the
    payload's build-matches-flavor check fails (mamba-org/micromamba-docker #620)."""
    expected, _ = gates.expectations(
        "cuda", KINDS["cuda"], [artifact("torch", "2.13.0+cpu", "pip")], {})
    assert expected.cuda is None
    assert expected.as_environment()["LOCKDOCK_EXPECT_FLAVOR"] == "cuda"


def test_expectations_cpu_flavor_expects_no_cuda_and_labels_agreeing() -> None:
    labels = {
        PYTHON_LABEL: "3.12.7",
        runtime_label("cuda"): "none",
        FLAVOR_LABEL: "cpu",
    }
    locked = [artifact("python", "3.12.7"), artifact("pytorch", "2.5.1")]
    expected, problems = gates.expectations(
        "cpu", KINDS["cpu"], locked, labels)
    assert problems == []
    assert expected.cuda == "none"
    env = expected.as_environment()
    assert env["LOCKDOCK_EXPECT_PYTHON"] == "3.12.7"
    assert env["LOCKDOCK_EXPECT_CUDA"] == "none"
    assert env["LOCKDOCK_EXPECT_PREFIX"] == "/opt/conda/envs/lockdock"


def test_expectations_report_labels_that_contradict_the_lock() -> None:
    labels = {
        TORCH_LABEL: "2.4.0",
        runtime_label("cuda"): "12.6.3",
        FLAVOR_LABEL: "cpu",
    }
    expected, problems = gates.expectations(
        "cuda", KINDS["cuda"],
        [artifact("pytorch", "2.5.1"), artifact("cuda-version", "12.6")],
        labels,
    )
    assert expected.torch == "2.5.1" and expected.cuda == "12.6"  # the lock wins
    assert len(problems) == 2  # torch label and flavor label; 12.6.3 ~ 12.6 agrees
    assert any("2.4.0" in p for p in problems) and any("'cpu'" in p for p in problems)


def test_cuda_flavor_without_cuda_in_lock_leaves_cuda_unset() -> None:
    expected, _ = gates.expectations(
        "cuda", KINDS["cuda"], [artifact("pytorch", "2.5.1")], {})
    assert expected.cuda is None
    assert "LOCKDOCK_EXPECT_CUDA" not in expected.as_environment()
    assert expected.as_environment()["LOCKDOCK_EXPECT_FLAVOR"] == "cuda"


# --- parsing and verdict --------------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
<testcase classname="test_determinism" name="test_same_seed[cpu]" time="3.5"/>
<testcase classname="test_gradients" name="test_gradcheck[cpu-custom_function]" time="0.1">
  <failure message="gradcheck custom_function: expected match, observed mismatch">trace</failure>
</testcase>
<testcase classname="test_environment" name="test_torch_version" time="0.0"/>
<testcase classname="test_gpu" name="test_device_visible" time="0.0">
  <skipped type="pytest.skip" message="no CUDA device visible">skip</skipped>
</testcase>
<testcase classname="test_gradients" name="test_sgd[cpu]" time="0.0">
  <error message="fixture blew up">boom</error>
</testcase>
</testsuite></testsuites>"""

OBSERVATIONS = {
    "schema": 1,
    "environment": {"python": "3.12.7", "torch": "2.5.1", "torch_cuda": None, "prefix": "/p"},
    "observations": [
        {
            "gate": "determinism",
            "test": "test_determinism.py::test_same_seed[cpu]",
            "check": "determinism hash equal",
            "expected": "run 1: abc",
            "observed": "run 2: abc",
            "ok": True,
        },
        {
            "gate": "gradients",
            "test": "test_gradients.py::test_gradcheck[cpu-custom_function]",
            "check": "gradcheck custom_function",
            "expected": "a | b",
            "observed": "mismatch",
            "ok": False,
        },
    ],
}

FINGERPRINT = {
    "schema": 1,
    "devices": {
        "cpu": {
            "determinism": {"state_sha256": "f" * 64, "final_loss": (0.75).hex()},
            "reference_outputs": {"matmul_float64": {"sha256": "a" * 64}},
        }
    },
}

IMAGE = gates.ImageUnderTest(
    reference="lockdock/cpu:latest",
    digest="sha256:" + "1" * 64,
    flavor="cpu",
    platform="linux/amd64",
    labels={LOCK_HASH_LABEL: "deadbeef"},
)
EXPECTED = gates.Expectations(flavor="cpu", python="3.12.7", torch="2.5.1",
                            accelerator={"LOCKDOCK_EXPECT_CUDA": "none"})


def test_parse_junit_outcomes_and_gates() -> None:
    cases = gates.parse_junit(JUNIT)
    assert [(c.gate, c.outcome) for c in cases] == [
        ("determinism", "passed"),
        ("gradients", "failed"),
        ("environment", "passed"),
        ("gpu", "skipped"),
        ("gradients", "error"),
    ]
    assert cases[1].test_id == "test_gradients::test_gradcheck[cpu-custom_function]"
    assert "mismatch" in cases[1].message
    assert cases[3].message == "no CUDA device visible"


def test_parse_junit_rejects_broken_xml() -> None:
    with pytest.raises(GateError, match="not valid XML"):
        gates.parse_junit("<testsuites><testcase")


@pytest.mark.parametrize(
    ("test", "gate"),
    [
        ("test_gradients", "gradients"),
        ("test_gradients.py::test_x[cpu]", "gradients"),
        ("tests/image/test_gpu.py::test_y", "gpu"),
        ("tests.image.test_environment", "environment"),
    ],
)
def test_gate_of(test: str, gate: str) -> None:
    assert gates.gate_of(test) == gate


def _case(classname: str, outcome: str) -> gates.CaseResult:
    return gates.CaseResult(classname=classname, name="t", outcome=outcome)


PASSING = [_case(f"test_{g}", "passed") for g in gates.REQUIRED_GATES]


def test_verdict_passes_clean_run() -> None:
    assert gates.verdict_problems(PASSING, [], gpu=False, exit_code=0) == []


def test_verdict_payload_that_did_not_run() -> None:
    problems = gates.verdict_problems([], [], gpu=False, exit_code=4)
    assert any("exited with code 4" in p for p in problems)
    assert any("no test results" in p for p in problems)


def test_verdict_gate_with_only_skips_fails() -> None:
    cases = [*PASSING[:2], _case("test_environment", "skipped")]
    problems = gates.verdict_problems(cases, [], gpu=False, exit_code=0)
    assert problems == ["gate 'environment' has no passing test (all skipped or missing)"]


def test_verdict_gpu_host_requires_gpu_gate() -> None:
    cases = [*PASSING, _case("test_gpu", "skipped")]
    assert gates.verdict_problems(cases, [], gpu=False, exit_code=0) == []
    assert gates.verdict_problems(cases, [], gpu=True, exit_code=0) == [
        "gate 'gpu' has no passing test (all skipped or missing)"
    ]


def _failing_report(**overrides: Any) -> gates.GateReport:
    arguments: dict[str, Any] = {
        "junit": JUNIT,
        "observations": OBSERVATIONS,
        "fingerprint": FINGERPRINT,
        "gpu": False,
        "exit_code": 1,
        "log_tail": "E   gradcheck failed",
    }
    arguments.update(overrides)
    return gates.build_report(IMAGE, EXPECTED, **arguments)


def test_report_with_failures_fails() -> None:
    report = _failing_report()
    assert not report.passed
    assert report.counts == {"passed": 2, "failed": 1, "errors": 1, "skipped": 1}
    assert [c.test_id for c in report.failed] == [
        "test_gradients::test_gradcheck[cpu-custom_function]",
        "test_gradients::test_sgd[cpu]",
    ]


def test_report_missing_observations_is_a_problem() -> None:
    report = _failing_report(observations=None)
    assert any("observations.json" in p for p in report.problems)


def test_render_markdown() -> None:
    markdown = gates.render_markdown(_failing_report())
    assert markdown.startswith("## lockdock gates: `cpu` (linux/amd64) — FAILED")
    assert "| gradients | gradcheck custom_function | a \\| b | mismatch | ❌ FAIL |" in markdown
    assert (
        "| determinism | determinism hash equal | run 1: abc | run 2: abc | ✅ pass |" in markdown
    )
    # a failed test without its own observation still gets a row
    assert (
        "| gradients | test_sgd[cpu] | test passes | error: fixture blew up | ❌ FAIL |" in markdown
    )
    assert "- 1 tests: no CUDA device visible" in markdown
    assert "| cpu | ffffffffffffffff | 0.75 | matmul_float64 aaaaaaaaaaaa |" in markdown
    assert "| lock content hash | deadbeef | |" in markdown
    unlabelled = gates.build_report(
        replace(IMAGE, labels={}), EXPECTED, junit=JUNIT, observations=OBSERVATIONS,
        fingerprint=None, gpu=False, exit_code=1,
    )  # fmt: skip
    assert "| lock content hash | — | |" in gates.render_markdown(unlabelled)
    assert "E   gradcheck failed" in markdown  # log tail shown on failure


def test_gate_record_schema_and_publish_accepts_only_passing(tmp_path: Path) -> None:
    local = publish_plan.LocalImage(platform="linux/amd64", reference="r", digest=IMAGE.digest)
    path = tmp_path / "gate.json"
    failing = gates.gate_record(_failing_report())
    assert failing["passed"] is False
    assert failing["failed"] == [
        "test_gradients::test_gradcheck[cpu-custom_function]",
        "test_gradients::test_sgd[cpu]",
    ]
    assert publish_plan.gate_refusal(failing, path, "cpu", local) is not None

    clean = gates.build_report(
        IMAGE,
        EXPECTED,
        junit=JUNIT.replace("<failure", "<x")
        .replace("</failure>", "</x>")
        .replace("<error", "<y")
        .replace("</error>", "</y>"),
        observations={**OBSERVATIONS, "observations": OBSERVATIONS["observations"][:1]},
        fingerprint=FINGERPRINT,
        gpu=False,
        exit_code=0,
    )
    record = gates.gate_record(clean)
    assert record["passed"] is True, clean.problems
    assert {
        "schema",
        "image_digest",
        "image_ref",
        "flavor",
        "platform",
        "passed",
        "counts",
        "expected",
        "lock_content_hash",
    } <= set(record)
    assert publish_plan.gate_refusal(record, path, "cpu", local) is None
    other = publish_plan.LocalImage(platform="linux/amd64", reference="r",
                                    digest="sha256:" + "2" * 64)
    assert publish_plan.gate_refusal(record, path, "cpu", other) is not None


def test_report_dir_is_where_publish_looks(tmp_path: Path) -> None:
    directory = Workspace(tmp_path).report_dir("cpu", IMAGE.digest)
    assert directory == tmp_path / STATE_DIR / "reports" / "cpu" / ("1" * 64)
    assert directory / GATE_FILE == Workspace(tmp_path).gate_path("cpu", IMAGE.digest)


def test_write_report_files_and_step_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "junit.xml").write_text(JUNIT)
    (results / "observations.json").write_text(json.dumps(OBSERVATIONS))
    out = tmp_path / "report"
    out.mkdir()
    (out / "fingerprint.json").write_text("{}")  # stale, from an earlier run of this digest
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    gates.write_report(_failing_report(), out, results)
    assert sorted(p.name for p in out.iterdir()) == [
        "gate.json",
        "junit.xml",
        "observations.json",
        "report.md",
    ]
    assert json.loads((out / "gate.json").read_text())["passed"] is False
    assert summary.read_text().startswith("earlier step\n## lockdock gates: `cpu`")


class FakeContainer:
    def __init__(self, exit_code: int) -> None:
        self.exit_code = exit_code
        self.removed = False

    def wait(self, timeout: float) -> dict[str, int]:
        return {"StatusCode": self.exit_code}

    def logs(self, stdout: bool, stderr: bool) -> bytes:
        return b"1 failed, 26 passed\n"

    def remove(self, force: bool) -> None:
        self.removed = True


class FakeContainers:
    """Records the run arguments; writes what a payload run leaves in the results mount."""

    def __init__(self, junit: str, exit_code: int) -> None:
        self.junit = junit
        self.exit_code = exit_code
        self.kwargs: dict[str, Any] = {}
        self.container = FakeContainer(exit_code)

    def run(self, image: str, **kwargs: Any) -> FakeContainer:
        self.kwargs = {"image": image, **kwargs}
        results = next(
            Path(host) for host, bind in kwargs["volumes"].items() if bind["mode"] == "rw"
        )
        (results / "junit.xml").write_text(self.junit)
        (results / "observations.json").write_text(json.dumps(OBSERVATIONS))
        return self.container


class FakeImage:
    def __init__(self) -> None:
        self.id = IMAGE.digest
        self.attrs = {"Os": "linux", "Architecture": "amd64", "Config": {"Labels": IMAGE.labels}}


class FakeImages:
    def get(self, reference: str) -> FakeImage:
        return FakeImage()


class FakeClient:
    def __init__(self, junit: str = JUNIT, exit_code: int = 1) -> None:
        self.containers = FakeContainers(junit, exit_code)
        self.images = FakeImages()


@pytest.mark.parametrize("gpu", [False, True])
def test_run_in_image_isolation_arguments(tmp_path: Path, gpu: bool) -> None:
    client = FakeClient()
    payload = tmp_path / "payload"
    payload.mkdir()
    code, log = gates.run_in_image(
        client, IMAGE, payload, tmp_path, {"LOCKDOCK_EXPECT_FLAVOR": "cpu"},
        accelerator=KINDS["cuda"], devices=gpu
    )
    kwargs = client.containers.kwargs
    assert (code, log) == (1, "1 failed, 26 passed\n")
    assert kwargs["image"] == IMAGE.digest  # the exact image that gets the report
    assert kwargs["network_mode"] == "none"
    assert kwargs["user"] == "lockdock"
    assert kwargs["read_only"] is True and "/tmp" in kwargs["tmpfs"]
    assert kwargs["volumes"][str(payload)] == {"bind": PAYLOAD_MOUNT, "mode": "ro"}
    assert kwargs["volumes"][str(tmp_path)] == {"bind": RESULTS_MOUNT, "mode": "rw"}
    assert kwargs["entrypoint"] == ["/opt/conda/envs/lockdock/bin/python"]
    assert kwargs["environment"]["LOCKDOCK_GATES_RESULTS"] == RESULTS_MOUNT
    assert kwargs["environment"]["LOCKDOCK_EXPECT_FLAVOR"] == "cpu"
    if gpu:
        (request,) = kwargs["device_requests"]
        assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    else:
        assert kwargs["device_requests"] is None
    assert client.containers.container.removed


def _project(root: Path) -> Path:
    (root / "images" / "cpu").mkdir(parents=True)
    write_flavor(root / "images", "cpu")
    (root / "environment.yml").write_text("channels: [conda-forge]\ndependencies: [python]\n")
    packages = [
        {"name": "python", "version": "3.12.7", "manager": "conda", "platform": "linux-64",
         "url": "https://example.invalid/python-3.12.7-h_0.conda", "hash": {"sha256": "0" * 64},
         "dependencies": {}, "category": "main"},
        {"name": "pytorch", "version": "2.5.1", "manager": "conda", "platform": "linux-64",
         "url": "https://example.invalid/pytorch-2.5.1-cpu_0.conda", "hash": {"sha256": "1" * 64},
         "dependencies": {}, "category": "main"},
    ]  # fmt: skip
    lock = {
        "version": 1,
        "metadata": {"platforms": ["linux-64"], "channels": [], "sources": [], "content_hash": {}},
        "package": packages,
    }
    (root / "conda-lock.yml").write_text(json.dumps(lock))  # JSON is YAML
    return root


def test_gate_flavor_writes_report_then_raises_on_failure(tmp_path: Path) -> None:
    root = _project(tmp_path)
    payload = tmp_path / "payload"
    payload.mkdir()
    client = FakeClient()
    with pytest.raises(GateError, match=r"test_gradcheck\[cpu-custom_function\]") as raised:
        gates.gate_flavor(root, "cpu", image_ref="lockdock/cpu:latest", payload=payload,
                          gpu=False, client=client)  # fmt: skip
    assert raised.value.exit_code == 11
    out = Workspace(root).report_dir("cpu", IMAGE.digest)
    record = json.loads((out / "gate.json").read_text())
    assert record["passed"] is False and record["expected"]["python"] == "3.12.7"
    assert "FAILED" in (out / "report.md").read_text()
    assert (out / "payload.log").read_text() == "1 failed, 26 passed\n"
    env = client.containers.kwargs["environment"]
    assert env["LOCKDOCK_EXPECT_TORCH"] == "2.5.1" and env["LOCKDOCK_EXPECT_CUDA"] == "none"


def test_gate_flavor_unknown_flavor_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Unknown flavor 'rocm'"):
        gates.gate_flavor(_project(tmp_path), "rocm", client=FakeClient())


def test_run_in_image_hung_payload_is_a_result_and_the_container_goes(tmp_path: Path) -> None:
    import requests

    client = FakeClient()

    def hang(timeout: float) -> dict[str, int]:
        raise requests.exceptions.ReadTimeout("read timed out")

    client.containers.container.wait = hang  # type: ignore[method-assign]
    code, log = gates.run_in_image(client, IMAGE, tmp_path, tmp_path, {},
                                   accelerator=KINDS["cpu"], devices=False, timeout_s=5)
    assert code == -1 and "did not finish within 5 s" in log
    assert client.containers.container.removed
    report = gates.build_report(
        IMAGE, EXPECTED, junit=None, observations=None, fingerprint=None, gpu=False,
        exit_code=code,
    )  # fmt: skip
    assert not report.passed and "exited with code -1" in report.problems[0]


def test_default_image_is_the_last_build_else_latest(tmp_path: Path) -> None:
    assert gates.default_image_reference(tmp_path, "cpu") == "lockdock/cpu:latest"
    record = Workspace(tmp_path).build_record_path("cpu", str(native_platform().docker))
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({
        "flavor": "cpu", "platform": "linux/amd64", "reference": "lockdock/cpu:cpu-0123456789ab",
        "digest": "sha256:" + "0" * 64, "tags": [], "lock": "conda-lock.yml",
        "lock_sha256": "0" * 64, "source_date_epoch": 0, "labels": {},
    }))  # fmt: skip
    assert gates.default_image_reference(tmp_path, "cpu") == "lockdock/cpu:cpu-0123456789ab"


def test_a_rocm_test_flavor_needs_only_its_accelerator_class() -> None:
    """The rocm kind goes lock -> tags -> gate expectations -> device requests with no code
    outside lockdock.accelerators.Rocm (tests/unit/test_tags.py covers its tags)."""
    locked = [artifact("python", "3.11.9"), artifact("torch", "2.5.1+rocm6.2", "pip")]
    expected, problems = gates.expectations("rocm", KINDS["rocm"], locked,
                                            {runtime_label("rocm"): "6.2"})
    assert problems == []
    env = expected.as_environment()
    assert env["LOCKDOCK_EXPECT_ACCELERATOR"] == "rocm" and env["LOCKDOCK_EXPECT_ROCM"] == "6.2"
    assert env["LOCKDOCK_EXPECT_CUDA"] == "none"  # a ROCm torch is no CUDA build
    client = FakeClient()
    gates.run_in_image(client, IMAGE, Path("/tmp"), Path("/tmp"), env,
                       accelerator=KINDS["rocm"], devices=True)
    kwargs = client.containers.kwargs
    assert kwargs["devices"] == ["/dev/kfd:/dev/kfd", "/dev/dri:/dev/dri"]
    assert kwargs["group_add"] == ["video"] and kwargs["device_requests"] is None


def test_the_default_payload_is_this_checkouts_tests_image(tmp_path: Path) -> None:
    """A project without tests/image/ gates with lockdock's own payload."""
    assert gates.default_payload_dir(tmp_path) == REPO_ROOT / "tests" / "image"
    own = tmp_path / "tests" / "image"
    own.mkdir(parents=True)
    (own / "conftest.py").write_text("")
    assert gates.default_payload_dir(tmp_path) == own
