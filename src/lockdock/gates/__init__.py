"""Gates: run the payload (``tests/image/``) inside a flavor's image and write its health report.

Pure part (unit-tested): what the image is expected to contain (``expectations``: from the
lock, cross-checked with the image's labels), the environment passed to the payload, JUnit XML
and the payload's ``observations.json`` into a ``GateReport``, the verdict, the Markdown
health report and ``gate.json``.

Edge part: ``run_in_image`` starts the payload with the Docker SDK — tests mounted read-only,
no network, the non-root user, read-only root file system with a tmpfs ``/tmp``, a writable
results mount, the flavor's accelerator devices when the host has them
(``Accelerator.device_request``) — and ``write_report`` writes the report atomically to
``Workspace.report_dir`` (and appends it to ``$GITHUB_STEP_SUMMARY``). ``gate_flavor``
chains them and raises ``GateError`` when a gate failed, after the report is written.

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

Modules: ``expect`` (what the image must contain), ``results`` (JUnit + observations ->
verdict), ``render`` (report.md, gate.json), ``run`` (the edges).
"""

from lockdock.gates.expect import Expectations, expectations
from lockdock.gates.render import SCHEMA, gate_record, render_fingerprint, render_markdown
from lockdock.gates.results import (
    GPU_GATE,
    REQUIRED_GATES,
    CaseResult,
    GateReport,
    ImageUnderTest,
    Observation,
    build_report,
    gate_of,
    parse_junit,
    parse_observations,
    verdict_problems,
)
from lockdock.gates.run import (
    default_image_reference,
    default_payload_dir,
    gate_flavor,
    inspect_image,
    run_in_image,
    write_report,
)

__all__ = [
    "GPU_GATE", "REQUIRED_GATES", "SCHEMA", "CaseResult", "Expectations", "GateReport",
    "ImageUnderTest", "Observation", "build_report", "default_image_reference",
    "default_payload_dir", "expectations", "gate_flavor", "gate_of", "gate_record",
    "inspect_image", "parse_junit", "parse_observations", "render_fingerprint",
    "render_markdown", "run_in_image", "verdict_problems", "write_report",
]  # fmt: skip
