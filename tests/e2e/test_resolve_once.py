"""One ``lockdock build`` reads the project once and the lock's bytes once (issue 9).

The build runs for real up to the engine: lock check, flavor resolution, store check, package
timestamps, planning and staging of the Dockerfile, store and SBOM contexts; only the calls
into Docker and the installer-wheel download are replaced (they are the engine's and pip's).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import lockdock.context
import lockdock.spec
from lockdock import engine
from lockdock.image import build as image_build
from lockdock.image import stage
from lockdock.workspace import Workspace
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_one_build_reads_project_and_lock_once(
    demo_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("lock", "cpu", project=demo_project) == 0, capsys.readouterr().err
    assert run_cli("fetch", "cpu", "--platform", "linux-64", project=demo_project) == 0
    shutil.copytree(REPO / "images" / "base", demo_project / "images" / "base")
    lock_path = demo_project / "conda-lock.yml"
    counts: Counter[str] = Counter()

    real_load = lockdock.spec.load_project

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        counts["load_project"] += 1
        return real_load(*args, **kwargs)

    real_read_bytes = Path.read_bytes

    def counted_read_bytes(self: Path) -> bytes:
        if self == lock_path:
            counts["lock read"] += 1
        return real_read_bytes(self)

    monkeypatch.setattr(lockdock.spec, "load_project", counted_load)
    monkeypatch.setattr(lockdock.context, "load_project", counted_load)
    monkeypatch.setattr(Path, "read_bytes", counted_read_bytes)
    # the engine and pip: nothing of lockdock's own reading happens behind these
    monkeypatch.setattr(engine, "check_engine", lambda builder=None: None)
    monkeypatch.setattr(image_build, "local_image_id", lambda reference: None)
    monkeypatch.setattr(image_build, "run_buildx", lambda argv, what, load=False: None)
    monkeypatch.setattr(image_build, "image_id", lambda reference: "sha256:" + "0" * 64)
    monkeypatch.setattr(image_build, "tag", lambda reference, tags: None)
    monkeypatch.setattr(image_build, "untag", lambda reference: None)
    monkeypatch.setattr(stage, "prepare_installer",
                        lambda project, platform, dest: dest.mkdir(parents=True, exist_ok=True))

    assert run_cli("build", "cpu", "--platform", "linux/amd64", "--base-image", "b:1",
                   project=demo_project) == 0, capsys.readouterr().err
    assert counts == {"load_project": 1, "lock read": 1}
    record = Workspace(demo_project).read_build_record("cpu", "linux/amd64")
    assert record is not None and record.reference.startswith("lockdock/cpu:cpu-")
