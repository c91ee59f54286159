"""The gates' edges: find the image, run the payload in it, write the report."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lockdock.accelerators import Accelerator
from lockdock.context import resolve_flavor
from lockdock.engine import docker_client, lookup_problem, native_platform
from lockdock.errors import EngineError, GateError, UsageError
from lockdock.facts import IMAGE_PYTHON, IMAGE_USER
from lockdock.gates.expect import expectations
from lockdock.gates.render import gate_record, render_markdown
from lockdock.gates.results import GateReport, ImageUnderTest, build_report
from lockdock.platform import Platform
from lockdock.registry import local_image_option
from lockdock.tags import LOCAL_MOVING, local_name
from lockdock.workspace import (
    FINGERPRINT_FILE,
    JUNIT_FILE,
    OBSERVATIONS_FILE,
    PAYLOAD_LOG_FILE,
    REPORT_FILE,
    Workspace,
    write_report_files,
)

PAYLOAD_MOUNT = "/lockdock-gates/tests"

RESULTS_MOUNT = "/lockdock-gates/results"


def write_report(report: GateReport, directory: Path, results: Path | None) -> Path:
    """report.md, the result files and gate.json (last) into ``directory``; the Markdown is
    also appended to ``$GITHUB_STEP_SUMMARY`` on GitHub's runners."""
    markdown = render_markdown(report)
    write_report_files(directory, markdown, gate_record(report), results)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
    return directory


def host_has_devices(accelerator: Accelerator) -> bool:
    import shutil

    return accelerator.host_has_devices(_Host(shutil.which, os.path.exists))


class _Host:
    def __init__(self, which: Any, exists: Any) -> None:
        self.which, self.exists = which, exists


#: lockdock's own checkout when it runs from one (src/lockdock/gates/run.py -> the root).
SOURCE_CHECKOUT = Path(__file__).resolve().parents[3]


def default_payload_dir(project_root: Path) -> Path:
    """The project's own ``tests/image`` if it has one, else lockdock's (source checkout)."""
    for candidate in (
        project_root / "tests" / "image",
        SOURCE_CHECKOUT / "tests" / "image",
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
    record = Workspace(project_root).read_build_record(flavor, str(native_platform().docker))
    return record.reference if record else f"{local_name(flavor)}:{LOCAL_MOVING}"


def inspect_image(client: Any, reference: str, flavor: str) -> ImageUnderTest:
    import docker.errors

    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        raise UsageError(
            f"No image {reference!r} in the local engine: build it with "
            f"`lockdock build {flavor}` or pass --image."
        ) from None
    except docker.errors.APIError as error:  # a reference the engine refuses: exit 2
        raise lookup_problem(reference, error.status_code, error.explanation or str(error)) \
            from None
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
    accelerator: Accelerator,
    devices: bool,
    timeout_s: float = 1800,
) -> tuple[int, str]:
    """Run the payload in ``image``; returns (pytest's exit code, the log). Results land in
    ``results`` (made writable for the image's non-root user). ``devices``: give the
    container the accelerator's devices (``Accelerator.device_request``)."""
    import docker.errors
    import requests
    from docker.types import DeviceRequest

    request = accelerator.device_request()
    results.chmod(0o777)  # the container's user (uid 1000) writes here
    # named, so that a container the engine created but could not start (run() raises before
    # it returns one) is found and removed too
    name = f"lockdock-gates-{os.getpid()}-{os.urandom(6).hex()}"
    container = None
    try:
        container = client.containers.run(
            image.digest,
            name=name,
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
            device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])]
            if devices and request.gpus else None,
            devices=[f"{d}:{d}" for d in request.devices] if devices else None,
            group_add=list(request.groups) if devices and request.groups else None,
            detach=True,
        )
        outcome = container.wait(timeout=timeout_s)
        log = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        return int(outcome.get("StatusCode", -1)), log
    except docker.errors.APIError as error:
        raise run_problem(image, str(error.explanation or error), accelerator, devices) \
            from None
    except requests.exceptions.RequestException as error:  # wait() timed out: payload hung
        return -1, f"the payload did not finish within {timeout_s:.0f} s ({error})"
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            (container or client.containers.get(name)).remove(force=True)


def run_problem(image: ImageUnderTest, explanation: str, accelerator: Accelerator,
                devices: bool) -> UsageError | EngineError:
    """The engine refusing to start the payload: an image without lockdock's user or
    environment is the ``--image`` at fault (exit 2); anything else is the engine's (9)."""
    missing = (f"no user {IMAGE_USER}" if f"unable to find user {IMAGE_USER}" in explanation
               else f"no {IMAGE_PYTHON}" if IMAGE_PYTHON in explanation
               and "no such file" in explanation.lower() else None)
    if missing:
        return UsageError(
            f"Image {image.reference} ({image.digest}) is not a lockdock image: it has "
            f"{missing}, which the gates need (the engine: {explanation}). Gate an image "
            f"that `lockdock build {image.flavor}` made, or pass --image with one."
        )
    return EngineError(
        f"The Docker engine could not run the gates in {image.reference} ({explanation})."
        + (f" Does the engine give containers {accelerator.kind} devices?" if devices
           else "")
    )


def _read(path: Path) -> str | None:
    """A result file the payload wrote (bytes not UTF-8 replaced: still a report)."""
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def _read_json(path: Path) -> dict[str, Any] | None:
    """A result object; None when absent or not a JSON object, as the report expects."""
    text = _read(path)
    if text is None:
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # malformed, too deep, a number Python refuses
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
    """``lockdock test FLAVOR``: gate the flavor's image, write its report, GateError on
    failure. ``gpu``: give the payload the accelerator's devices (default: when the host has
    them)."""
    from lockdock.progress import say, status
    from lockdock.spec import load_project

    if image_ref is not None:
        image_ref = local_image_option(image_ref)
    project = load_project(project_root)
    flavor = project.one(flavor_name)
    client = client or docker_client()
    reference = image_ref or default_image_reference(project.root, flavor.name)
    under_test = inspect_image(client, reference, flavor.name)
    context = resolve_flavor(project.root, flavor.name, Platform.image(under_test.platform),
                             project=project)
    expected, label_problems = expectations(flavor.name, context.accelerator,
                                            context.lock.select(context.platform.subdir),
                                            under_test.labels)
    devices = host_has_devices(context.accelerator) if gpu is None else gpu
    payload = payload or default_payload_dir(project.root)
    out = context.workspace.report_dir(flavor.name, under_test.digest)
    with tempfile.TemporaryDirectory(prefix="lockdock-gates-") as scratch:
        results = Path(scratch)
        with status(f"gates: {flavor.name} in {under_test.reference}"):
            exit_code, log = run_in_image(
                client, under_test, payload, results, expected.as_environment(),
                accelerator=context.accelerator, devices=devices,
            )
        (results / PAYLOAD_LOG_FILE).write_text(log, encoding="utf-8")
        report = build_report(
            under_test,
            expected,
            junit=_read(results / JUNIT_FILE),
            observations=_read_json(results / OBSERVATIONS_FILE),
            fingerprint=_read_json(results / FINGERPRINT_FILE),
            gpu=devices,
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
