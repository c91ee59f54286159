"""Gates: run the payload (``tests/image/``) inside a flavor's image and write its health report.

Pure part (unit-tested): what the image is expected to contain (``expectations``: from the
lock, cross-checked with the image's labels), the environment passed to the payload, JUnit XML
and the payload's ``observations.json`` into a ``GateReport``, the verdict, the Markdown
health report and ``gate.json``.

Edge part: ``run_in_image`` starts the payload with the Docker SDK — tests mounted read-only,
no network, the non-root user, read-only root file system with a tmpfs ``/tmp``, a writable
results mount, every GPU when the host has one — and ``write_report`` writes the report
atomically to ``.lockdock/reports/<flavor>/<digest hex>/`` (and appends it to
``$GITHUB_STEP_SUMMARY``). ``gate_flavor`` chains them and raises ``GateError`` when a gate
failed, after the report is written.

``gate.json`` (what ``publish`` checks; schema 1)::

    {"schema": 1, "image_digest": "sha256:…", "image_ref": "…", "flavor": "cpu",
     "platform": "linux/amd64", "passed": true, "gpu": false,
     "counts": {"passed": 27, "failed": 0, "errors": 0, "skipped": 39},
     "failed": ["test_gradients::test_gradcheck[cpu-custom_function]", …],
     "problems": ["…why the verdict is false beyond failed tests…"],
     "expected": {"python": "3.11.9", "torch": "2.13.0", "cuda": "none", …},
     "lock_content_hash": "…", "payload_exit_code": 0,
     "files": {"report": "report.md", "junit": "junit.xml",
               "observations": "observations.json", "fingerprint": "fingerprint.json"}}
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockdock import image as image_build
from lockdock.errors import EngineError, GateError, UsageError
from lockdock.fsutil import write_text_atomic
from lockdock.installer.lockfile import LockedArtifact

SCHEMA = 1
REPORTS_DIR = Path(".lockdock") / "reports"
GATE_FILE = "gate.json"
REPORT_FILE = "report.md"
JUNIT_FILE = "junit.xml"
OBSERVATIONS_FILE = "observations.json"
FINGERPRINT_FILE = "fingerprint.json"
PAYLOAD_LOG_FILE = "payload.log"

#: Where things live inside the image (docs/architecture.md: image layout).
ENV_PREFIX = image_build.ENV_PREFIX
IMAGE_PYTHON = f"{ENV_PREFIX}/bin/python"
IMAGE_USER = "lockdock"
PAYLOAD_MOUNT = "/lockdock-gates/tests"
RESULTS_MOUNT = "/lockdock-gates/results"

#: The payload's gates (test module ``test_<gate>.py``) that must each have a passing test.
REQUIRED_GATES = ("determinism", "gradients", "environment")
GPU_GATE = "gpu"

DOCKER_TO_CONDA = image_build.DOCKER_TO_CONDA

#: Image label keys (written by image.py) that the gates read.
FLAVOR_LABEL = image_build.FLAVOR_LABEL
LOCK_HASH_LABEL = image_build.LOCK_HASH_LABEL
VERSION_LABELS = {
    "python": image_build.PYTHON_LABEL,
    "torch": image_build.TORCH_LABEL,
    "cuda": image_build.CUDA_LABEL,
}


# --- expectations (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Expectations:
    """What the payload must find in the image; ``cuda`` is ``"none"`` for a CPU build."""

    flavor: str
    python: str | None
    torch: str | None
    cuda: str | None
    prefix: str = ENV_PREFIX

    def as_environment(self) -> dict[str, str]:
        """The ``LOCKDOCK_EXPECT_*`` variables of tests/image/gatekit.py."""
        values = {
            "LOCKDOCK_EXPECT_FLAVOR": self.flavor,
            "LOCKDOCK_EXPECT_PYTHON": self.python,
            "LOCKDOCK_EXPECT_TORCH": self.torch,
            "LOCKDOCK_EXPECT_CUDA": self.cuda,
            "LOCKDOCK_EXPECT_PREFIX": self.prefix,
        }
        return {key: value for key, value in values.items() if value}

    def as_dict(self) -> dict[str, str | None]:
        return {
            "flavor": self.flavor,
            "python": self.python,
            "torch": self.torch,
            "cuda": self.cuda,
            "prefix": self.prefix,
        }


def expectations(
    flavor: str, artifacts: Iterable[LockedArtifact], labels: Mapping[str, str]
) -> tuple[Expectations, list[str]]:
    """The payload's expectations from the lock, and each disagreement with the image's labels.

    The lock is what the image was built from, so it is the expectation; a label that says
    otherwise is reported as a problem (the gate fails), never silently preferred.
    """
    versions = image_build.lock_versions(artifacts)
    locked = {"python": versions.python, "torch": versions.torch, "cuda": versions.cuda}
    problems = []
    for key, label in VERSION_LABELS.items():
        said = labels.get(label)
        want = locked[key] or "none"  # image.py labels an absent version "none"
        if said is None:
            continue
        if key == "cuda" and said != "none":
            said = ".".join(said.split(".")[:2])
        if said != want:
            problems.append(f"image label {label}={labels.get(label)!r} but the lock says {want!r}")
    flavor_label = labels.get(FLAVOR_LABEL)
    if flavor_label is not None and flavor_label != flavor:
        problems.append(
            f"image label {FLAVOR_LABEL}={flavor_label!r} but it is tested as flavor {flavor!r}"
        )
    cuda = locked["cuda"]
    if cuda is None and not flavor.startswith("cuda"):
        cuda = "none"
    return (
        Expectations(flavor=flavor, python=locked["python"], torch=locked["torch"], cuda=cuda),
        problems,
    )


# --- results (pure) --------------------------------------------------------------------------


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


# --- rendering (pure) ------------------------------------------------------------------------


def _cell(value: object) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text.replace("|", "\\|") if text else "—"


def _status(ok: bool) -> str:
    return "✅ pass" if ok else "❌ FAIL"


def render_markdown(report: GateReport) -> str:
    image, env, counts = report.image, report.environment, report.counts
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [
        f"## lockdock gates: `{image.flavor}` ({image.platform}) — {verdict}",
        "",
        "| | expected | observed |",
        "|---|---|---|",
        f"| image | {_cell(image.reference)} | {_cell(image.digest)} |",
        f"| flavor | {_cell(report.expected.flavor)} | "
        f"{_cell('CUDA ' + str(env['torch_cuda']) if env.get('torch_cuda') else 'CPU build')} |",
        f"| Python | {_cell(report.expected.python)} | {_cell(env.get('python'))} |",
        f"| PyTorch | {_cell(report.expected.torch)} | {_cell(env.get('torch'))} |",
        f"| CUDA | {_cell(report.expected.cuda)} | {_cell(env.get('torch_cuda') or 'none')} |",
        f"| interpreter | {_cell(report.expected.prefix)} | {_cell(env.get('prefix'))} |",
        f"| lock content hash | {_cell(image.labels.get(LOCK_HASH_LABEL))} | |",
        f"| GPU | {'passed in' if report.gpu else 'none on the host: GPU checks skipped'} | "
        f"{_cell(', '.join(env.get('cuda_devices') or []) or 'none visible')} |",
        "",
        f"Tests: {counts['passed']} passed, {counts['failed']} failed, {counts['errors']} errors, "
        f"{counts['skipped']} skipped (payload exit code {report.exit_code}).",
        "",
    ]
    if report.problems:
        lines += ["**Problems:**", ""] + [f"- {_cell(p)}" for p in report.problems] + [""]
    lines += ["| gate | check | expected | observed | status |", "|---|---|---|---|---|"]
    observed_tests = {o.test for o in report.observations}
    for row in report.observations:
        lines.append(
            f"| {row.gate} | {_cell(row.check)} | {_cell(row.expected)} | "
            f"{_cell(row.observed)} | {_status(row.ok)} |"
        )
    for case in report.failed:
        if not any(case.name in test for test in observed_tests if gate_of(test) == case.gate):
            lines.append(
                f"| {case.gate} | {_cell(case.name)} | test passes | "
                f"{_cell(case.outcome + ': ' + case.message)} | ❌ FAIL |"
            )
    skipped: dict[str, list[str]] = {}
    for case in report.cases:
        if case.outcome == "skipped":
            skipped.setdefault(case.message or "skipped", []).append(case.test_id)
    if skipped:
        lines += ["", "Skipped:", ""]
        for reason, tests in sorted(skipped.items()):
            lines.append(f"- {len(tests)} tests: {_cell(reason)}")
    lines += ["", *render_fingerprint(report.fingerprint)]
    if (report.failed or report.problems) and report.log_tail:
        lines += ["", "<details><summary>payload log (tail)</summary>", "", "```"]
        lines += [report.log_tail.rstrip(), "```", "", "</details>"]
    return "\n".join(lines).rstrip() + "\n"


def render_fingerprint(fingerprint: Mapping[str, Any]) -> list[str]:
    devices = fingerprint.get("devices") or {}
    if not devices:
        return ["Numerics fingerprint: none recorded."]
    lines = [
        "Numerics fingerprint (`fingerprint.json`):",
        "",
        "| device | determinism state sha256 | final loss | reference outputs |",
        "|---|---|---|---|",
    ]
    for device, entry in sorted(devices.items()):
        determinism = entry.get("determinism") or {}
        final_loss = determinism.get("final_loss")
        loss = f"{float.fromhex(final_loss):.6g}" if final_loss else "—"
        references = entry.get("reference_outputs") or {}
        refs = ", ".join(f"{name} {v['sha256'][:12]}" for name, v in sorted(references.items()))
        lines.append(
            f"| {device} | {_cell(str(determinism.get('state_sha256', '—'))[:16])} | {loss} | "
            f"{_cell(refs)} |"
        )
    return lines


def gate_record(report: GateReport) -> dict[str, Any]:
    """The contents of ``gate.json`` (schema in the module docstring)."""
    lock_hash = report.image.labels.get(LOCK_HASH_LABEL)
    return {
        "schema": SCHEMA,
        "image_digest": report.image.digest,
        "image_ref": report.image.reference,
        "flavor": report.image.flavor,
        "platform": report.image.platform,
        "passed": report.passed,
        "gpu": report.gpu,
        "counts": report.counts,
        "failed": [case.test_id for case in report.failed],
        "problems": list(report.problems),
        "expected": report.expected.as_dict(),
        "lock_content_hash": lock_hash,
        "payload_exit_code": report.exit_code,
        "files": {
            "report": REPORT_FILE,
            "junit": JUNIT_FILE,
            "observations": OBSERVATIONS_FILE,
            "fingerprint": FINGERPRINT_FILE,
        },
    }


def report_dir(project_root: Path, flavor: str, digest: str) -> Path:
    """``.lockdock/reports/<flavor>/<digest without sha256:>/`` (publish reads gate.json there)."""
    return project_root / REPORTS_DIR / flavor / digest.removeprefix("sha256:")


# --- edges -----------------------------------------------------------------------------------


def write_report(report: GateReport, directory: Path, results: Path | None) -> Path:
    """Write report.md, gate.json and copy the payload's result files, each atomically.

    gate.json is written last: a crash part-way leaves no verdict for publish to trust.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stale = directory / GATE_FILE
    if stale.exists():
        stale.unlink()
    for name in (JUNIT_FILE, OBSERVATIONS_FILE, FINGERPRINT_FILE, PAYLOAD_LOG_FILE):
        source = results / name if results else None
        if source is not None and source.is_file():
            write_text_atomic(directory / name, source.read_text(encoding="utf-8"))
        elif (directory / name).exists():
            (directory / name).unlink()  # from an earlier run of this digest: not this one's
    markdown = render_markdown(report)
    write_text_atomic(directory / REPORT_FILE, markdown)
    write_text_atomic(
        directory / GATE_FILE, json.dumps(gate_record(report), indent=2, sort_keys=True) + "\n"
    )
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
    return directory


def host_has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def default_payload_dir(project_root: Path) -> Path:
    """The project's own ``tests/image`` if it has one, else lockdock's (source checkout)."""
    for candidate in (
        project_root / "tests" / "image",
        Path(__file__).resolve().parents[2] / "tests" / "image",
    ):
        if (candidate / "conftest.py").is_file():
            return candidate
    raise UsageError(
        f"No gate payload: neither {project_root}/tests/image nor lockdock's source checkout "
        "has one. Pass --payload DIR."
    )


def default_image_reference(project_root: Path, flavor: str) -> str:
    """The image ``lockdock build FLAVOR`` last built for this machine's platform (its
    content-addressed tag, from the build record), else ``lockdock/FLAVOR:latest``."""
    record = image_build.build_record_path(project_root, flavor, image_build.native_platform())
    try:
        reference = json.loads(record.read_text(encoding="utf-8")).get("reference")
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        reference = None
    return str(reference) if reference else f"{image_build.default_name(flavor)}:latest"


def inspect_image(client: Any, reference: str, flavor: str) -> ImageUnderTest:
    import docker.errors

    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        raise UsageError(
            f"No image {reference!r} in the local engine: build it with "
            f"`lockdock build {flavor}` or pass --image."
        ) from None
    attrs = image.attrs
    return ImageUnderTest(
        reference=reference,
        digest=str(image.id),
        flavor=flavor,
        platform=f"{attrs.get('Os', 'linux')}/{attrs.get('Architecture', 'amd64')}",
        labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
    )


def run_in_image(
    client: Any,
    image: ImageUnderTest,
    payload: Path,
    results: Path,
    environment: Mapping[str, str],
    *,
    gpu: bool,
    timeout_s: float = 1800,
) -> tuple[int, str]:
    """Run the payload in ``image``; returns (pytest's exit code, the log). Results land in
    ``results`` (made writable for the image's non-root user)."""
    import docker.errors
    import requests
    from docker.types import DeviceRequest

    results.chmod(0o777)  # the container's user (uid 1000) writes here
    container = None
    try:
        container = client.containers.run(
            image.digest,
            entrypoint=[IMAGE_PYTHON],
            command=[
                "-m",
                "pytest",
                PAYLOAD_MOUNT,
                f"--junitxml={RESULTS_MOUNT}/{JUNIT_FILE}",
                "-p",
                "no:cacheprovider",
            ],
            user=IMAGE_USER,
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=1g"},
            shm_size="256m",  # DataLoader workers pass tensors through /dev/shm
            working_dir="/tmp",
            volumes={
                str(payload.resolve()): {"bind": PAYLOAD_MOUNT, "mode": "ro"},
                str(results.resolve()): {"bind": RESULTS_MOUNT, "mode": "rw"},
            },
            environment={
                **environment,
                "LOCKDOCK_GATES_RESULTS": RESULTS_MOUNT,
                "PYTHONDONTWRITEBYTECODE": "1",
                "HOME": "/tmp",
            },
            device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else None,
            detach=True,
        )
        outcome = container.wait(timeout=timeout_s)
        log = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        return int(outcome.get("StatusCode", -1)), log
    except docker.errors.APIError as error:
        raise EngineError(
            f"The Docker engine could not run the gates in {image.reference} ({error})."
            + (" Is the NVIDIA container toolkit installed?" if gpu else "")
        ) from None
    except requests.exceptions.RequestException as error:  # wait() timed out: payload hung
        return -1, f"the payload did not finish within {timeout_s:.0f} s ({error})"
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _read_json(path: Path) -> dict[str, Any] | None:
    text = _read(path)
    if text is None:
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def gate_flavor(
    project_root: Path,
    flavor_name: str,
    *,
    image_ref: str | None = None,
    payload: Path | None = None,
    gpu: bool | None = None,
    client: Any = None,
) -> GateReport:
    """``lockdock test FLAVOR``: gate the flavor's image, write its report, GateError on failure."""
    from lockdock.installer.lockfile import read_lock
    from lockdock.progress import say, status
    from lockdock.spec import load_project

    project = load_project(project_root)
    (flavor,) = project.select([flavor_name])
    client = client or image_build.docker_client()
    reference = image_ref or default_image_reference(project.root, flavor.name)
    under_test = inspect_image(client, reference, flavor.name)
    conda_platform = DOCKER_TO_CONDA.get(under_test.platform)
    if conda_platform is None:
        raise UsageError(
            f"Image {under_test.reference} is for {under_test.platform}; lockdock gates "
            f"{', '.join(DOCKER_TO_CONDA)} images."
        )
    artifacts = read_lock(flavor.lock_path).select(conda_platform)
    expected, label_problems = expectations(flavor.name, artifacts, under_test.labels)
    use_gpu = host_has_gpu() if gpu is None else gpu
    payload = payload or default_payload_dir(project.root)
    out = report_dir(project.root, flavor.name, under_test.digest)
    with tempfile.TemporaryDirectory(prefix="lockdock-gates-") as scratch:
        results = Path(scratch)
        with status(f"gates: {flavor.name} in {under_test.reference}"):
            exit_code, log = run_in_image(
                client, under_test, payload, results, expected.as_environment(), gpu=use_gpu
            )
        (results / PAYLOAD_LOG_FILE).write_text(log, encoding="utf-8")
        report = build_report(
            under_test,
            expected,
            junit=_read(results / JUNIT_FILE),
            observations=_read_json(results / OBSERVATIONS_FILE),
            fingerprint=_read_json(results / FINGERPRINT_FILE),
            gpu=use_gpu,
            exit_code=exit_code,
            label_problems=label_problems,
            log_tail=log[-3000:],
        )
        write_report(report, out, results)
    say(f"gates: {flavor.name} {'passed' if report.passed else 'FAILED'}: {out / REPORT_FILE}")
    if not report.passed:
        failed = [c.test_id for c in report.failed] + list(report.problems)
        raise GateError(
            f"The gates failed for image {under_test.reference} ({under_test.digest}, flavor "
            f"{flavor.name}): {'; '.join(failed[:8])}{' …' if len(failed) > 8 else ''}. "
            f"Report: {out / REPORT_FILE}."
        )
    return report
