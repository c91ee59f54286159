"""verify-repro: the OCI comparison that names what differs, the two builds it runs, and the
recorded build it checks them against (pure: buildx and the layouts are faked)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lockdock.errors import ReproducibilityError
from lockdock.image import plan, repro
from lockdock.installer.pyc_cache import PYC_CACHE_ARG, PYC_CACHE_OFF
from lockdock.tags import Tags
from lockdock.workspace import BuildRecord


def _layer(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1704067200
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _layout(root: Path, layers: list[bytes]) -> Path:
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    config = put(json.dumps({"os": "linux", "architecture": "amd64"}).encode())
    manifest = put(json.dumps({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": config},
        "layers": [{"digest": put(layer)} for layer in layers],
    }).encode())  # fmt: skip
    (root / "index.json").write_text(json.dumps({"manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest,
        "platform": {"os": "linux", "architecture": "amd64"},
    }]}))  # fmt: skip
    return root


def test_diff_names_the_file_that_differs(tmp_path: Path) -> None:
    same = _layer({"opt/env/bin/python": b"elf"})
    a = _layout(tmp_path / "a", [same, _layer({"etc/stamp": b"1", "etc/keep": b"k"})])
    b = _layout(tmp_path / "b", [same, _layer({"etc/stamp": b"2", "etc/keep": b"k"})])
    ma, mb = repro.platform_manifests(a), repro.platform_manifests(b)
    assert set(ma) == {"linux/amd64"} and ma != mb
    lines = repro.explain_difference(a, b, ma["linux/amd64"], mb["linux/amd64"])
    assert any(line.strip().startswith("etc/stamp:") for line in lines)
    assert not any("etc/keep" in line or "opt/env" in line for line in lines)
    assert lines[0].startswith("layer 2 ")


def _repro_plan(tmp_path: Path) -> plan.BuildPlan:
    return plan.BuildPlan(
        project_root=tmp_path, flavor="cpu", platform="linux/amd64", conda_platform="linux-64",
        lock_path=Path("conda-lock.yml"), lock_sha256="0" * 64, epoch=1704067200,
        base_image="base:1", name="n", tags=Tags("cpu-0", (), ("latest",)), labels={},
        dockerfile=tmp_path / "cpu.Dockerfile", store_context=tmp_path / "store",
        installer_context=tmp_path / "inst", sbom_context=tmp_path / "sbom",
    )  # fmt: skip


def _record(**changes: Any) -> BuildRecord:
    fields: dict[str, Any] = dict(
        flavor="cpu", platform="linux/amd64", reference="n:cpu-0", digest="sha256:1",
        tags=("n:cpu-0",), lock="conda-lock.yml", lock_sha256="0" * 64,
        source_date_epoch=1704067200, compression="zstd", base_image="base:1", builder=None)
    fields.update(changes)
    return BuildRecord(**fields)


def _fake_repro(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: BuildRecord | None
) -> tuple[Any, list[list[str]]]:
    argvs: list[list[str]] = []
    monkeypatch.setattr(repro, "prepare_build", lambda *a, **k: _repro_plan(tmp_path))
    monkeypatch.setattr(repro, "stage_sbom", lambda *a, **k: None)
    monkeypatch.setattr(repro, "run_buildx", lambda argv, what: argvs.append(argv))
    monkeypatch.setattr(repro, "platform_manifests", lambda layout: {"linux/amd64": "sha256:1"})
    workspace = SimpleNamespace(read_build_record=lambda flavor, platform: record)
    return SimpleNamespace(workspace=workspace), argvs


def test_verify_repro_compiles_every_pyc_in_both_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, argvs = _fake_repro(tmp_path, monkeypatch, None)
    result = repro.verify_repro(context, keep=tmp_path / "keep")
    assert result.identical and len(argvs) == 2
    for argv in argvs:
        assert "--no-cache" in argv and f"{PYC_CACHE_ARG}={PYC_CACHE_OFF}" in argv
        assert "compression=gzip" in argv[argv.index("--output") + 1]  # no record: the default


def test_verify_repro_checks_the_recorded_build_with_its_compression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, argvs = _fake_repro(tmp_path, monkeypatch, _record())
    assert repro.verify_repro(context).identical
    assert all("compression=zstd" in argv[argv.index("--output") + 1] for argv in argvs)
    drifted, _ = _fake_repro(tmp_path, monkeypatch, _record(digest="sha256:2"))
    with pytest.raises(ReproducibilityError) as raised:
        repro.verify_repro(drifted)
    message = raised.value.message
    assert "agree on sha256:1" in message and "n:cpu-0, is sha256:2" in message
    assert "type=exec.cachemount" in message


@pytest.mark.parametrize(("changes", "reason"), [
    ({"compression": None}, "predates"),
    ({"lock_sha256": "1" * 64}, "another lock"),
    ({"base_image": None}, "another base image (the default)"),
    ({"builder": "remote"}, "another builder (remote)"),
])  # fmt: skip
def test_a_record_of_another_build_is_not_compared(
    tmp_path: Path, changes: dict[str, Any], reason: str
) -> None:
    found = repro.comparable_record(_record(**changes), _repro_plan(tmp_path))
    assert isinstance(found, str) and reason in found
    assert repro.comparable_record(_record(), _repro_plan(tmp_path)) == _record()
    assert "no build" in str(repro.comparable_record(None, _repro_plan(tmp_path)))
