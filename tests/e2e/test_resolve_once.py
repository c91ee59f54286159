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


def test_a_cache_that_cannot_be_written_is_exit_13_after_the_image_is_tagged(
    demo_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--cache-to`` is exported in a second BuildKit run after the image is built, tagged
    and recorded; its failure says so and exits 13, the image stays."""
    from lockdock import buildopts
    from lockdock.errors import BuildError

    assert run_cli("lock", "cpu", project=demo_project) == 0, capsys.readouterr().err
    assert run_cli("fetch", "cpu", "--platform", "linux-64", project=demo_project) == 0
    shutil.copytree(REPO / "images" / "base", demo_project / "images" / "base")
    runs: list[list[str]] = []
    tagged: list[str] = []

    def buildx(argv: list[str], what: str, load: bool = False) -> None:
        runs.append(list(argv))
        if "type=cacheonly" in argv:
            raise BuildError(f"{what} failed: unauthorized: authentication required")

    monkeypatch.setattr(engine, "check_engine", lambda builder=None: None)
    monkeypatch.setattr(buildopts, "builder_driver", lambda builder: "docker-container")
    monkeypatch.setattr(image_build, "local_image_id", lambda reference: None)
    monkeypatch.setattr(image_build, "run_buildx", buildx)
    monkeypatch.setattr(image_build, "image_id", lambda reference: "sha256:" + "0" * 64)
    monkeypatch.setattr(image_build, "tag", lambda reference, tags: tagged.extend(tags))
    monkeypatch.setattr(image_build, "untag", lambda reference: None)
    monkeypatch.setattr(stage, "prepare_installer",
                        lambda project, platform, dest: dest.mkdir(parents=True, exist_ok=True))
    capsys.readouterr()
    code = run_cli("build", "cpu", "--platform", "linux/amd64", "--base-image", "b:1",
                   "--cache-to", "127.0.0.1:5000/cache/cpu", project=demo_project)
    err = capsys.readouterr().err
    assert code == 13, err
    assert "was built, tagged and recorded" in err and "127.0.0.1:5000/cache/cpu" in err
    assert "--cache-to" not in runs[0]  # the image build itself exports nothing
    assert any(arg.startswith("type=registry,ref=127.0.0.1:5000/cache/cpu") for arg in runs[1])
    assert tagged and tagged[0].startswith("lockdock/cpu:cpu-")
    assert Workspace(demo_project).read_build_record("cpu", "linux/amd64") is not None
