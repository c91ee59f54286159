"""The health report (``report.md``) and ``gate.json`` of one gate run (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lockdock.facts import LOCK_HASH_LABEL
from lockdock.gates.results import GateReport, gate_of
from lockdock.workspace import FINGERPRINT_FILE, JUNIT_FILE, OBSERVATIONS_FILE, REPORT_FILE

SCHEMA = 1

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
