"""The workspace: every .lockdock path from one place, every record round-trips through its
one writer and reader, and every malformed record is one clean error naming the file."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from lockdock import workspace
from lockdock.errors import LocalFileError, LockdockError, PublishRefusedError, SpecError
from lockdock.workspace import BuildRecord, Workspace

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "1" * 64

BUILD = BuildRecord(
    flavor="cpu", platform="linux/arm64", reference="lockdock/cpu:cpu-0123456789ab-arm64",
    digest=DIGEST, tags=("lockdock/cpu:cpu-0123456789ab-arm64", "lockdock/cpu:latest-arm64"),
    lock="/p/conda-lock.yml", lock_sha256="0123456789ab" + "0" * 52, source_date_epoch=1700000000,
    labels={"io.lockdock.flavor": "cpu"},
)  # fmt: skip

PUBLISHED = {
    "flavor": "cpu", "repository": "127.0.0.1:5000/t/ml", "digest": DIGEST,
    "reference": f"127.0.0.1:5000/t/ml:cpu-0123456789ab@{DIGEST}",
    "tags": ["cpu-0123456789ab", "cpu"], "lock": "conda-lock.yml", "lock_hash": "0" * 64,
    "date": "20250101",
    "platforms": {"linux/amd64": {"digest": DIGEST, "image_id": DIGEST, "tag": "cpu-0123456789ab",
                                  "gate_report": ".lockdock/reports/cpu/1/gate.json"}},
}  # fmt: skip


def test_the_layout(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    state = tmp_path / ".lockdock"
    assert ws.state == state and ws.store == state / "store"
    assert ws.build_dir == state / "build" and ws.rattler_cache == state / "cache" / "rattler"
    assert ws.build_record_path("cpu", "linux/amd64") == state / "builds" / "cpu" / "amd64.json"
    assert ws.build_record_path("cuda", "linux/arm64") == state / "builds" / "cuda" / "arm64.json"
    assert ws.report_dir("cpu", DIGEST) == state / "reports" / "cpu" / ("1" * 64)
    assert ws.gate_path("cpu", DIGEST) == ws.report_dir("cpu", DIGEST) / "gate.json"
    assert ws.relock_dir == state / "relock" and ws.demo_dir == state / "demo"
    assert ws.images_lock_path == tmp_path / "images.lock.json"
    assert ws.relative(ws.gate_path("cpu", DIGEST)) == f".lockdock/reports/cpu/{'1' * 64}/gate.json"
    assert ws.relative(Path("/elsewhere/x")) == "/elsewhere/x"


def test_a_build_record_for_an_unknown_platform_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LockdockError, match="linux/s390x"):
        Workspace(tmp_path).build_record_path("cpu", "linux/s390x")


def test_build_record_round_trips(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    assert ws.read_build_record("cpu", "linux/arm64") is None
    path = ws.write_build_record(BUILD)
    assert path == ws.build_record_path("cpu", "linux/arm64")
    assert ws.read_build_record("cpu", "linux/arm64") == BUILD
    assert json.loads(path.read_text())["reference"] == BUILD.reference
    how = dataclasses.replace(BUILD, compression="zstd", base_image="b:1", builder="remote")
    ws.write_build_record(how)
    assert ws.read_build_record("cpu", "linux/arm64") == how
    # A record written before these were recorded reads with none of them.
    older = {k: v for k, v in how.to_json().items()
             if k not in ("compression", "base_image", "builder")}
    path.write_text(json.dumps(older))
    assert ws.read_build_record("cpu", "linux/arm64") == BUILD


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{not json", "not valid JSON (line 1, column 2)"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({k: v for k, v in BUILD.to_json().items() if k != "reference"}),
         "`reference` should be a str, found nothing"),
        (json.dumps({**BUILD.to_json(), "source_date_epoch": "soon"}), "`source_date_epoch`"),
        (json.dumps({**BUILD.to_json(), "source_date_epoch": True}), "`source_date_epoch`"),
        (json.dumps({**BUILD.to_json(), "tags": [1]}), "`tags` and `labels`"),
        (json.dumps({**BUILD.to_json(), "compression": 6}), "`compression` should be a str"),
    ],
)
def test_a_malformed_build_record_is_a_spec_error_naming_it(tmp_path: Path, text: str,
                                                            names: str) -> None:
    ws = Workspace(tmp_path)
    path = ws.build_record_path("cpu", "linux/arm64")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(SpecError) as raised:
        ws.read_build_record("cpu", "linux/arm64")
    assert str(path) in str(raised.value) and names in str(raised.value)
    assert "lockdock build" in str(raised.value)  # says what to do


def test_gate_report_files_round_trip_and_gate_json_is_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(tmp_path)
    out = ws.report_dir("cpu", DIGEST)
    results = tmp_path / "results"
    results.mkdir()
    (results / workspace.JUNIT_FILE).write_text("<testsuite/>")
    out.mkdir(parents=True)
    (out / workspace.FINGERPRINT_FILE).write_text("{}")  # an earlier run's, not this one's
    gate = {"image_digest": DIGEST, "flavor": "cpu", "passed": True}
    written: list[str] = []
    original = workspace.write_text_atomic

    def recording(path: Path, text: str) -> None:
        written.append(path.name)
        original(path, text)

    monkeypatch.setattr(workspace, "write_text_atomic", recording)
    workspace.write_report_files(out, "# report\n", gate, results)
    assert written[-1] == workspace.GATE_FILE
    assert sorted(p.name for p in out.iterdir()) == ["gate.json", "junit.xml", "report.md"]
    assert ws.read_gate("cpu", DIGEST) == gate
    assert ws.read_gate("cpu", "sha256:" + "2" * 64) is None


@pytest.mark.parametrize("text", ["{", "[]", '"passed"'])
def test_a_malformed_gate_json_refuses_the_publication(tmp_path: Path, text: str) -> None:
    path = Workspace(tmp_path).gate_path("cpu", DIGEST)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(PublishRefusedError, match=re.escape(str(path))) as raised:
        workspace.read_gate_record(path)
    assert "lockdock test" in str(raised.value)


def test_images_lock_round_trips_sorted_and_replacing(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    assert ws.read_images_lock() is None
    cuda = {**PUBLISHED, "flavor": "cuda"}
    again = {**PUBLISHED, "digest": "sha256:" + "2" * 64}
    data = workspace.updated_images_lock(workspace.updated_images_lock(None, cuda), PUBLISHED)
    assert [r["flavor"] for r in data["images"]] == ["cpu", "cuda"]
    data = workspace.updated_images_lock(data, again)
    assert [r["digest"] for r in data["images"]] == [again["digest"], DIGEST]
    path = ws.write_images_lock(data)
    assert ws.read_images_lock() == data
    assert path.read_text() == workspace.render_images_lock(json.loads(path.read_text()))
    assert workspace.published_records(data, "cpu") == [again]
    assert workspace.published_records(data, "cpu", "other/repo") == []


def _images(*records: Any, **top: Any) -> str:
    return json.dumps({"version": 1, "images": list(records), **top})


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{", "not valid JSON"),
        ("[]", "needs an `images` list"),
        (json.dumps({"version": 1}), "needs an `images` list"),
        (_images(version=2), "version 2"),
        (_images("cpu"), "record 1"),
        (_images(PUBLISHED, {k: v for k, v in PUBLISHED.items() if k != "reference"}),
         "(record 2): `reference` should be a str, found nothing"),
        (_images({**PUBLISHED, "digest": 7}), "`digest` should be a str, found int 7"),
        (_images({**PUBLISHED, "platforms": {"linux/amd64": "x"}}), "`platforms`"),
    ],
)
def test_a_malformed_images_lock_is_a_spec_error_naming_it(tmp_path: Path, text: str,
                                                          names: str) -> None:
    ws = Workspace(tmp_path)
    ws.images_lock_path.write_text(text)
    with pytest.raises(SpecError) as raised:
        ws.read_images_lock()
    assert str(ws.images_lock_path) in str(raised.value)
    assert names in str(raised.value)


def test_read_json_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    assert workspace.read_json(tmp_path / "absent.json") is None
    (tmp_path / "dir.json").mkdir()  # unreadable: a local file problem (exit 16), named
    with pytest.raises(LocalFileError, match=r"dir\.json"):
        workspace.read_json(tmp_path / "dir.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(LockdockError, match=r"bad\.json"):
        workspace.read_json(tmp_path / "bad.json")
    (tmp_path / "cut.json").write_text('{"a": ')
    with pytest.raises(PublishRefusedError, match=r"cut\.json is not valid JSON.*Do this\."):
        workspace.read_json(tmp_path / "cut.json", error=PublishRefusedError, fix="Do this.")


def test_every_lockdock_path_comes_from_the_workspace() -> None:
    """No module but the workspace (and the installer, which cannot import it) spells
    ``.lockdock`` as a path or names ``images.lock.json``'s file."""
    spelled = re.compile(r"""["']\.lockdock["'/]|["']images\.lock\.json["']""")
    allowed = {ROOT / "src/lockdock/workspace.py", ROOT / "src/lockdock/installer/store.py",
               Path(__file__).resolve()}
    offenders = []
    for folder in ("src", "ci", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path in allowed:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if spelled.search(code) and '"""' not in code:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
