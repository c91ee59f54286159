"""The artifact store: layout, pure fetch planning, verified downloads, retries, concurrency."""

from __future__ import annotations

import functools
import hashlib
import http.server
import subprocess
import sys
import textwrap
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockdock.cli import main as cli_main
from lockdock.errors import IntegrityError, NetworkError
from lockdock.installer import download as downloads
from lockdock.installer import store
from lockdock.installer.lockfile import LockedArtifact, read_lock
from lockdock.testing.flavors import write_flavor
from lockdock.testing.installs import Entry, write_lock
from lockdock.workspace import Workspace
from tests.helpers import http_server


def artifact_for(path: Path, *, manager: str = "pip") -> LockedArtifact:
    data = path.read_bytes()
    return LockedArtifact(
        name=path.name.split("-")[0],
        version="1.0",
        manager=manager,
        platform="linux-64",
        url=path.as_uri(),
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest() if manager == "conda" else None,
        categories=frozenset({"main"}),
    )


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    """A folder of 'upstream' files: three wheels and a conda package, 200 KiB each."""
    up = tmp_path / "upstream"
    up.mkdir()
    for index, name in enumerate(
        ["alpha-1.0-py3-none-any.whl", "beta-1.0-py3-none-any.whl", "gamma-1.0-py3-none-any.whl",
         "delta-1.0-h0_0.conda"]
    ):  # fmt: skip
        (up / name).write_bytes(bytes([index]) * (200 * 1024) + name.encode())
    return up


def all_artifacts(up: Path) -> list[LockedArtifact]:
    return [
        artifact_for(p, manager="conda" if p.suffix == ".conda" else "pip")
        for p in sorted(up.iterdir())
    ]


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".part")]


# --- pure planning ------------------------------------------------------------------------


def test_layout_keeps_the_original_file_name_under_its_sha256(upstream: Path) -> None:
    artifact = all_artifacts(upstream)[0]
    assert store.relative_path(artifact) == f"sha256/{artifact.sha256}/{artifact.filename}"
    assert store.artifact_path(Path("/s"), artifact) == Path("/s") / store.relative_path(artifact)


def test_plan_fetch_skips_present_and_deduplicates_platforms(upstream: Path) -> None:
    artifacts = all_artifacts(upstream)
    other_platform = LockedArtifact(**{**artifacts[0].__dict__, "platform": "linux-aarch64"})
    present = frozenset({store.relative_path(artifacts[1])})
    planned = store.plan_fetch([*artifacts, other_platform], present)
    assert [store.relative_path(a) for a in planned] == sorted(
        store.relative_path(a) for a in artifacts if a is not artifacts[1]
    )


def test_artifact_without_sha256_is_refused(upstream: Path) -> None:
    artifact = LockedArtifact(**{**all_artifacts(upstream)[0].__dict__, "sha256": None})
    with pytest.raises(IntegrityError, match="has no sha256"):
        store.plan_fetch([artifact], frozenset())


# --- fetching -----------------------------------------------------------------------------


def test_fetch_downloads_verifies_and_resumes(upstream: Path, tmp_path: Path) -> None:
    target = tmp_path / "store"
    artifacts = all_artifacts(upstream)
    first = store.fetch(artifacts, target, jobs=2)
    assert len(first.downloaded) == 4 and not first.already_present
    for artifact in artifacts:
        path = store.artifact_path(target, artifact)
        assert path.read_bytes() == (upstream / artifact.filename).read_bytes()
    second = store.fetch(artifacts, target)
    assert not second.downloaded and len(second.already_present) == 4
    assert store.missing_from_store(artifacts, target) == []
    assert leftovers(target) == []


def test_download_with_wrong_sha256_keeps_nothing(upstream: Path, tmp_path: Path) -> None:
    target = tmp_path / "store"
    good, bad_file = all_artifacts(upstream)[:2]
    bad = LockedArtifact(**{**bad_file.__dict__, "sha256": "ab" * 32})
    with pytest.raises(IntegrityError) as caught:
        store.fetch([good, bad], target)
    message = str(caught.value)
    assert bad.name in message and "ab" * 32 in message and bad_file.sha256 in message
    assert not store.artifact_path(target, bad).parent.exists()  # not even its folder
    assert store.artifact_path(target, good).is_file()  # the verified one is kept (resume)
    assert leftovers(target) == []


def test_conda_download_with_wrong_md5_is_refused(upstream: Path, tmp_path: Path) -> None:
    conda = next(a for a in all_artifacts(upstream) if a.manager == "conda")
    bad = LockedArtifact(**{**conda.__dict__, "md5": "0" * 32})
    with pytest.raises(IntegrityError, match="md5"):
        store.fetch([bad], tmp_path / "store")
    assert store.missing_from_store([bad], tmp_path / "store") == [bad]


def test_corrupt_file_in_store_is_replaced(upstream: Path, tmp_path: Path) -> None:
    target = tmp_path / "store"
    artifact = all_artifacts(upstream)[0]
    store.fetch([artifact], target)
    path = store.artifact_path(target, artifact)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    report = store.fetch([artifact], target)
    assert report.replaced_corrupt == (artifact,)
    assert store.verify_file(artifact, path) is None


def test_transient_errors_are_retried_a_bounded_number_of_times(
    upstream: Path, tmp_path: Path
) -> None:
    artifact = all_artifacts(upstream)[0]
    calls: list[str] = []

    def flaky(url: str) -> Any:
        calls.append(url)
        if len(calls) < 3:
            raise urllib.error.HTTPError(url, 503, "unavailable", None, None)  # type: ignore[arg-type]
        return open(upstream / artifact.filename, "rb")

    pauses: list[float] = []
    downloads.download(artifact, tmp_path / "store", opener=flaky, sleep=pauses.append)
    assert len(calls) == 3 and pauses == list(downloads.RETRY_PAUSES)

    calls.clear()

    def always_down(url: str) -> Any:
        calls.append(url)
        raise urllib.error.HTTPError(url, 503, "unavailable", None, None)  # type: ignore[arg-type]

    other = all_artifacts(upstream)[1]
    with pytest.raises(NetworkError, match="503"):
        store.fetch([other], tmp_path / "store2", opener=always_down)
    assert len(calls) == downloads.DOWNLOAD_ATTEMPTS


def test_not_found_is_not_retried(upstream: Path, tmp_path: Path) -> None:
    artifact = LockedArtifact(
        **{**all_artifacts(upstream)[0].__dict__, "url": (tmp_path / "nope.whl").as_uri()}
    )
    started = time.monotonic()
    with pytest.raises(NetworkError, match=r"nope\.whl"):
        store.fetch([artifact], tmp_path / "store")
    assert time.monotonic() - started < downloads.RETRY_PAUSES[0]


# --- concurrency --------------------------------------------------------------------------


class _SlowHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files in small, delayed chunks so concurrent downloads really overlap."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def copyfile(self, source: Any, outputfile: Any) -> None:
        while chunk := source.read(16 * 1024):
            outputfile.write(chunk)
            time.sleep(0.04)


@pytest.fixture
def slow_server(upstream: Path) -> Iterator[str]:
    with http_server(functools.partial(_SlowHandler, directory=str(upstream))) as url:
        yield url


def test_concurrent_fetch_processes_do_not_corrupt_the_store(
    upstream: Path, tmp_path: Path, slow_server: str
) -> None:
    entries = [
        Entry(p, f"{slow_server}/{p.name}", "conda" if p.suffix == ".conda" else "pip",
              p.name.split("-")[0], p.name.split("-")[1])
        for p in sorted(upstream.iterdir())
    ]  # fmt: skip
    for entry in entries:  # lock's versions must match the file names for conda
        if entry.manager == "conda":
            assert entry.path.name.startswith(f"{entry.name}-{entry.version}-")
    lock = write_lock(tmp_path / "conda-lock.yml", entries)
    target = tmp_path / "store"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from lockdock.installer import store
        from lockdock.installer.lockfile import read_lock
        artifacts = store.lock_artifacts(read_lock(Path({str(lock)!r})))
        report = store.fetch(artifacts, Path({str(target)!r}), jobs=4)
        print(len(report.downloaded))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    # The processes raced for the same files (some were downloaded twice, ~0.5 s each) and
    # the store still holds exactly one verified copy of each.
    assert sum(int(o.strip()) for o in outputs) > len(entries)
    artifacts = store.lock_artifacts(read_lock(lock))
    store.verify_artifacts(artifacts, target)
    assert store.inventory(target) == {store.relative_path(a) for a in artifacts}
    assert leftovers(target) == []


def test_inventory_ignores_temp_files_of_interrupted_downloads(
    upstream: Path, tmp_path: Path
) -> None:
    artifact = all_artifacts(upstream)[0]
    final = store.artifact_path(tmp_path / "store", artifact)
    final.parent.mkdir(parents=True)
    (final.parent / f".{final.name}.123.456.abc.part").write_bytes(b"half")
    assert store.inventory(tmp_path / "store") == frozenset()
    assert store.plan_fetch([artifact], store.inventory(tmp_path / "store")) == [artifact]


# --- CLI ----------------------------------------------------------------------------------


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        cli_main(args)
    return int(done.value.code or 0)


def test_cli_fetch_check_lists_missing_then_fetch_fills_the_store(
    upstream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    (project / "images" / "cpu").mkdir(parents=True)
    (project / "environment.yml").write_text("dependencies: []\n")
    write_flavor(project / "images", "cpu")
    entries = [
        Entry(p, p.as_uri(), "pip", p.name.split("-")[0], p.name.split("-")[1])
        for p in sorted(upstream.glob("*.whl"))
    ]
    write_lock(project / "conda-lock.yml", entries, platforms=("linux-64", "linux-aarch64"))

    assert run_cli(["-C", str(project), "fetch", "--check"]) == IntegrityError.exit_code
    err = capsys.readouterr().err
    assert "3 artifact(s) missing" in err
    assert all(p.name in err for p in upstream.glob("*.whl"))

    assert run_cli(["-C", str(project), "fetch", "cpu", "--platform", "linux-64"]) == 0
    assert "3 downloaded" in capsys.readouterr().err
    store_dir = Workspace(project).store
    assert len(store.inventory(store_dir)) == 3
    assert run_cli(["-C", str(project), "fetch", "--check"]) == 0

    assert run_cli(["-C", str(project), "fetch", "--platform", "win-64"]) == 2
    assert "no platform 'win-64'" in capsys.readouterr().err
