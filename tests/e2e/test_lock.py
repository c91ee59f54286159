"""End-to-end: `lockdock lock` on a local channel served over loopback HTTP."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from lockdock.cli import main
from lockdock.installer.lockfile import read_lock
from lockdock.lock import check_locks, plan_flavor
from lockdock.spec import load_project
from lockdock.workspace import STATE_DIR, Workspace
from tests.fixtures.channel import (
    CHANNEL_NAME,
    CPU_ENV,
    ServedChannel,
    write_project,
)


def run_cli(project: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(["-C", str(project), *args])
    return int(exited.value.code or 0)


def conda_entries(lock_path: Path, platform: str) -> dict[str, str]:
    """name -> file name of each conda entry for ``platform``."""
    lock = read_lock(lock_path)
    return {a.name: a.filename for a in lock.select(platform) if a.manager == "conda"}


@pytest.fixture
def locked_demo(demo_project: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run_cli(demo_project, "lock") == 0, capsys.readouterr().err
    capsys.readouterr()
    return demo_project


def test_cuda_flavor_gets_the_cuda_build_and_cpu_does_not(locked_demo: Path) -> None:
    for platform in ("linux-64", "linux-aarch64"):
        cpu = conda_entries(locked_demo / "conda-lock.yml", platform)
        cuda = conda_entries(locked_demo / "images" / "cuda" / "conda-lock.yml", platform)
        assert cpu["mlframework"] == "mlframework-1.0-cpu_0.conda"
        assert "cudakernel" not in cpu
        assert cuda["mlframework"] == "mlframework-1.0-cuda_0.conda"
        assert cuda["cudakernel"] == "cudakernel-1.0-0.conda"
        # several versions: newest allowed by `hello >=1,<2`
        assert cpu["hello"] == cuda["hello"] == "hello-1.1-0.conda"
        assert cpu["libnative"] == "libnative-1.0-h1_0.conda"


def test_platform_specific_urls_and_hashes(
    locked_demo: Path, served_channel: ServedChannel
) -> None:
    import hashlib

    lock = read_lock(locked_demo / "conda-lock.yml")
    assert lock.platforms == ("linux-64", "linux-aarch64")
    for platform in lock.platforms:
        (native,) = [a for a in lock.select(platform) if a.name == "libnative"]
        assert native.url == f"{served_channel.url}/{platform}/libnative-1.0-h1_0.conda"
        data = (served_channel.directory / platform / native.filename).read_bytes()
        assert native.sha256 == hashlib.sha256(data).hexdigest()
        assert native.md5 == hashlib.md5(data).hexdigest()
        assert native.categories == {"main"}
        assert native.dependencies == {"__glibc": ">=2.17"}


def test_cpu_flavor_refuses_a_cuda_package(
    tmp_path: Path, served_channel: ServedChannel, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(tmp_path, CPU_ENV.format(channel=served_channel.url)
                            + "  - cudakernel\n")  # fmt: skip
    assert run_cli(project, "lock") == 4
    err = capsys.readouterr().err
    assert "cannot be satisfied on linux-64" in err
    assert "__cuda" in err and "cudakernel" in err
    assert "Traceback" not in err
    assert not (project / "conda-lock.yml").exists()


def test_unsatisfiable_shows_the_conflict_and_keeps_the_old_lock(
    locked_demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = locked_demo / "conda-lock.yml"
    before = lock.read_bytes()
    env = locked_demo / "environment.yml"
    env.write_text(env.read_text().replace("hello >=1,<2", "hello >=2") + "  - clash-a\n")
    assert run_cli(locked_demo, "lock", "cpu") == 4
    err = capsys.readouterr().err
    assert "clash-a" in err and "hello" in err
    assert len(err.strip().splitlines()) == 1
    assert lock.read_bytes() == before
    assert [p.name for p in locked_demo.iterdir() if p.name.startswith(".conda-lock")] == []


def test_two_runs_give_identical_bytes(locked_demo: Path) -> None:
    paths = [locked_demo / "conda-lock.yml", locked_demo / "images" / "cuda" / "conda-lock.yml"]
    first = [p.read_bytes() for p in paths]
    import shutil

    shutil.rmtree(Workspace(locked_demo).state)  # a cold repodata cache too
    with pytest.raises(SystemExit) as exited:
        main(["-C", str(locked_demo), "lock"])
    assert exited.value.code == 0
    assert [p.read_bytes() for p in paths] == first
    text = first[0].decode()
    assert "created_at" not in text and "time_metadata" not in text


def test_conda_lock_parses_it(locked_demo: Path) -> None:
    from conda_lock.lockfile import parse_conda_lock_file

    for path in (locked_demo / "conda-lock.yml", locked_demo / "images/cuda/conda-lock.yml"):
        parsed = parse_conda_lock_file(path)
        assert parsed.metadata.platforms == ["linux-64", "linux-aarch64"]
        names = {(p.name, p.platform) for p in parsed.package}
        assert ("python", "linux-aarch64") in names
        assert all(p.hash.md5 and p.hash.sha256 for p in parsed.package)


def test_rattler_reads_it(locked_demo: Path) -> None:
    import rattler

    lock = rattler.LockFile.from_path(locked_demo / "images" / "cuda" / "conda-lock.yml")
    env = lock.default_environment()
    assert env is not None
    (linux64,) = [p for p in env.platforms() if p.name == "linux-64"]
    packages = env.conda_repodata_records_for_platform(linux64)
    assert packages is not None
    assert {str(r.name.normalized) for r in packages} >= {"cudakernel", "mlframework", "python"}


def test_content_hash_is_conda_locks_own(locked_demo: Path) -> None:
    from conda_lock.content_hash import compute_content_hashes
    from conda_lock.src_parser import make_lock_spec
    from conda_lock.virtual_package import (
        default_virtual_package_repodata,
        virtual_package_repo_from_specification,
    )

    from lockdock.lock import mapping_url

    cuda_dir = locked_demo / "images" / "cuda"
    cases = [
        (locked_demo / "conda-lock.yml", [locked_demo / "environment.yml"],
         default_virtual_package_repodata(cuda_version="")),
        (cuda_dir / "conda-lock.yml", [locked_demo / "environment.yml",
                                       cuda_dir / "environment.yml"],
         virtual_package_repo_from_specification(cuda_dir / "virtual-packages.yml")),
    ]  # fmt: skip
    for lock_path, sources, repo in cases:
        spec = make_lock_spec(src_files=sources, mapping_url=mapping_url())
        expected = compute_content_hashes(spec, repo)
        assert dict(read_lock(lock_path).content_hash) == expected
    cpu, cuda = (read_lock(c[0]).content_hash for c in cases)
    assert cpu["linux-64"] != cuda["linux-64"]


def test_check_flips_to_stale_after_an_edit(
    locked_demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(locked_demo, "lock", "--check") == 0
    project = load_project(locked_demo)
    assert check_locks(project) == []

    overlay = locked_demo / "images" / "cuda" / "environment.yml"
    overlay.write_text(overlay.read_text() + "  - hello 1.0\n")
    stale = check_locks(project)
    assert {(s.flavor, s.platform) for s in stale} == {
        ("cuda", "linux-64"), ("cuda", "linux-aarch64")
    }
    capsys.readouterr()
    assert run_cli(locked_demo, "lock", "--check") == 6
    err = capsys.readouterr().err
    assert "cuda/linux-64" in err and "cuda/linux-aarch64" in err and "cpu/" not in err
    assert run_cli(locked_demo, "lock", "--check", "cpu") == 0

    env = locked_demo / "environment.yml"
    env.write_text(env.read_text().replace("hello >=1,<2", "hello >=1,<1.1"))
    assert {s.flavor for s in check_locks(project)} == {"cpu", "cuda"}
    assert run_cli(locked_demo, "lock") == 0
    assert check_locks(project) == []
    assert conda_entries(locked_demo / "conda-lock.yml", "linux-64")["hello"] == "hello-1.0-0.conda"


def test_missing_lock_is_stale(demo_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(demo_project, "lock", "--check") == 6
    err = capsys.readouterr().err
    assert "cpu (" in err and "no lock file" in err and "cuda (" in err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_channel_names_it_and_suggests_a_mirror(
    locked_demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (locked_demo / "conda-lock.yml").read_bytes()
    dead = f"http://127.0.0.1:{_closed_port()}/{CHANNEL_NAME}"
    env = locked_demo / "environment.yml"
    env.write_text(env.read_text().replace(env.read_text().split("\n")[2].strip("- "), dead))
    assert run_cli(locked_demo, "lock") == 5
    err = capsys.readouterr().err
    assert dead in err and "--mirror" in err and "LOCKDOCK_MIRRORS" in err
    assert "Traceback" not in err
    assert (locked_demo / "conda-lock.yml").read_bytes() == before


def test_named_channel_through_a_mirror(
    tmp_path: Path, served_channel: ServedChannel, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    project = write_project(tmp_path, CPU_ENV.format(channel="conda-forge"))
    assert run_cli(project, "lock", "--mirror", f"conda-forge={served_channel.url}") == 0
    text = (project / "conda-lock.yml").read_text()
    assert yaml.safe_load(text)["metadata"]["channels"] == [
        {"url": "conda-forge", "used_env_vars": []}
    ]
    assert f"{served_channel.url}/noarch/hello-1.1-0.conda" in text
    # the environment variable does the same; the content hash ignores the mirror
    (project / "conda-lock.yml").unlink()
    monkeypatch.setenv("LOCKDOCK_MIRRORS", f"conda-forge={served_channel.url}")
    assert run_cli(project, "lock") == 0
    assert (project / "conda-lock.yml").read_text() == text
    assert run_cli(project, "lock", "--check") == 0
    capsys.readouterr()


def test_local_file_channel_goes_through_the_same_code(
    tmp_path: Path, served_channel: ServedChannel
) -> None:
    project = write_project(tmp_path, CPU_ENV.format(channel=served_channel.directory.as_uri()))
    assert run_cli(project, "lock") == 0
    entries = read_lock(project / "conda-lock.yml").select("linux-64")
    assert {a.url.split("/")[-1] for a in entries} >= {"hello-1.1-0.conda"}
    assert all(a.url.startswith("file://") for a in entries)


def test_plan_is_offline_and_pure(demo_project: Path) -> None:
    plan = plan_flavor(load_project(demo_project).flavors["cuda"])
    (linux64,) = [p for p in plan.platforms if p.platform == "linux-64"]
    assert "mlframework * cuda*" in linux64.conda_specs
    assert linux64.pip_requirements == ()
    assert {str(v) for v in plan.virtual_packages.for_platform("linux-64")} >= {"__cuda=12.6"}


# --- pip part: real PyPI -----------------------------------------------------------------

PIP_ENV = CPU_ENV + """\
  - six
  - pip
  - pip:
    - requests==2.32.3
    - six
"""


@pytest.mark.network
def test_pip_part_against_pypi(
    tmp_path: Path, served_channel: ServedChannel, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(tmp_path, PIP_ENV.format(channel=served_channel.url))
    assert run_cli(project, "lock") == 0, capsys.readouterr().err
    lock = read_lock(project / "conda-lock.yml")
    for platform in ("linux-64", "linux-aarch64"):
        pip = {a.name: a for a in lock.select(platform) if a.manager == "pip"}
        conda = {a.name: a for a in lock.select(platform) if a.manager == "conda"}
        assert "six" in conda and "six" not in pip  # provided by conda: not re-installed
        assert pip["requests"].version == "2.32.3"
        assert pip["requests"].url.startswith("https://files.pythonhosted.org/")
        assert pip["requests"].url.endswith("requests-2.32.3-py3-none-any.whl")
        assert pip["requests"].sha256 and len(pip["requests"].sha256) == 64
        assert {"idna", "urllib3", "certifi", "charset-normalizer"} <= set(pip)
        assert set(pip["requests"].dependencies) >= {"idna", "urllib3"}
        # charset-normalizer ships per-platform cp311 wheels: the platform's own is locked
        arch = "x86_64" if platform == "linux-64" else "aarch64"
        assert arch in pip["charset-normalizer"].filename
    first = (project / "conda-lock.yml").read_bytes()
    assert run_cli(project, "lock") == 0
    assert (project / "conda-lock.yml").read_bytes() == first
    assert run_cli(project, "lock", "--check") == 0


@pytest.mark.network
def test_pip_requirement_without_a_wheel(
    tmp_path: Path, served_channel: ServedChannel, capsys: pytest.CaptureFixture[str]
) -> None:
    env = CPU_ENV.format(channel=served_channel.url) + "  - pip\n  - pip:\n    - midiutil==1.2.1\n"
    project = write_project(tmp_path, env)
    (project / "conda-lock.yml").write_text("kept\n")
    assert run_cli(project, "lock") == 4
    err = capsys.readouterr().err
    assert "midiutil" in err and "no wheel for platform linux-64" in err
    assert (project / "conda-lock.yml").read_text() == "kept\n"


def test_a_failing_write_leaves_the_old_lock(
    locked_demo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import conda_lock.lockfile

    lock = locked_demo / "conda-lock.yml"
    before = lock.read_bytes()

    def half_write(content: object, path: Path, **kwargs: object) -> None:
        path.write_text("version: 1\npackage:\n- name: trunc")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(conda_lock.lockfile, "write_conda_lock_file", half_write)
    env = locked_demo / "environment.yml"
    env.write_text(env.read_text().replace("hello >=1,<2", "hello >=1,<1.1"))
    assert run_cli(locked_demo, "lock", "cpu") == 16  # LocalFileError: the disk is full
    err = capsys.readouterr().err
    assert "Could not write" in err and "no space left" in err.lower()
    assert "Traceback" not in err
    assert lock.read_bytes() == before
    assert sorted(p.name for p in locked_demo.iterdir()) == [
        str(STATE_DIR), "conda-lock.yml", "environment.yml", "images"
    ]
    capsys.readouterr()


def test_unreachable_python_index_is_a_network_error(
    tmp_path: Path, served_channel: ServedChannel, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("UV_DEFAULT_INDEX", f"http://127.0.0.1:{_closed_port()}/simple")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    env = CPU_ENV.format(channel=served_channel.url) + "  - pip\n  - pip:\n    - requests\n"
    project = write_project(tmp_path, env)
    assert run_cli(project, "lock") == 5
    err = capsys.readouterr().err
    assert "could not reach the Python package index" in err and "UV_DEFAULT_INDEX" in err
    assert not (project / "conda-lock.yml").exists()
