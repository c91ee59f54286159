"""Bad project input: one-paragraph error naming file/line, documented exit code, lock untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockdock.cli import main
from lockdock.errors import SpecError
from lockdock.spec import load_project, validate_environment_file
from lockdock.virtual_packages import KNOWN_PLATFORMS, load_virtual_packages
from tests.fixtures.channel import write_project

GOOD = """\
channels: [conda-forge]
platforms: [linux-64]
dependencies:
  - python 3.11.*
  - pip
  - pip:
    - requests>=2
"""

EXISTING_LOCK = "version: 1\nmetadata: {}\npackage: []\n# an existing lock must survive\n"


def run_cli(project: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(["-C", str(project), *args])
    return int(exited.value.code or 0)


def assert_fails_cleanly(
    project: Path, capsys: pytest.CaptureFixture[str], code: int, *needles: str
) -> str:
    lock = project / "conda-lock.yml"
    lock.write_text(EXISTING_LOCK, encoding="utf-8")
    assert run_cli(project, "lock") == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("lockdock: error: ")
    assert len(err.strip().splitlines()) == 1, err  # one paragraph
    for needle in needles:
        assert needle in err, err
    assert lock.read_text(encoding="utf-8") == EXISTING_LOCK
    assert sorted(p.name for p in project.iterdir()) == ["conda-lock.yml", "environment.yml",
                                                        "images"]  # fmt: skip
    return err


def test_good_file_validates_and_the_same_file_one_line_off_does_not(tmp_path: Path) -> None:
    path = tmp_path / "environment.yml"
    path.write_text(GOOD)
    validate_environment_file(path, KNOWN_PLATFORMS)  # raises SpecError when invalid
    path.write_text(GOOD.replace("platforms: [linux-64]", "platforms: [linux-65]"))
    with pytest.raises(SpecError, match=r"line 2: unknown platform 'linux-65'"):
        validate_environment_file(path, KNOWN_PLATFORMS)


def test_malformed_yaml_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = "channels: [conda-forge]\ndependencies:\n  - numpy\n - x: [\n"
    project = write_project(tmp_path, broken)
    assert_fails_cleanly(project, capsys, 3, "environment.yml is not valid YAML", "line 4")


def test_unknown_top_level_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path, GOOD + "dependancies:\n  - numpy\n")
    assert_fails_cleanly(project, capsys, 3, "line 8", "unknown top-level key 'dependancies'")


def test_invalid_match_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path, GOOD.replace("python 3.11.*", "numpy >=>1.2"))
    assert_fails_cleanly(project, capsys, 3, "line 4", "invalid match spec 'numpy >=>1.2'")


def test_invalid_pip_requirement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path, GOOD.replace("requests>=2", "requests>>=2"))
    assert_fails_cleanly(project, capsys, 3, "line 7", "invalid pip requirement")


def test_unknown_platform(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path, GOOD.replace("[linux-64]", "[linux-64, linux64]"))
    assert_fails_cleanly(project, capsys, 3, "line 2", "unknown platform 'linux64'")


def test_flavor_folder_without_dockerfile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(tmp_path, GOOD)
    (project / "images" / "gpu").mkdir()
    err = assert_fails_cleanly(project, capsys, 3, "has no Dockerfile")
    assert "images/gpu" in err


def test_overlay_is_validated_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path, GOOD, {"cuda": {"environment.yml": "dependencies: [1\n"}})
    err = assert_fails_cleanly(project, capsys, 3, "not valid YAML")
    assert "images/cuda/environment.yml" in err


def test_virtual_packages_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(
        tmp_path, GOOD, {"cuda": {"virtual-packages.yml": "subdirs:\n  linux-64:\n"
                                  "    packages:\n      __cuda: 12.10\n"}},
    )  # fmt: skip
    assert_fails_cleanly(project, capsys, 3, "virtual-packages.yml", "quoted string")


def test_virtual_packages_must_cover_every_platform(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vpkgs = 'subdirs:\n  linux-aarch64:\n    packages:\n      __cuda: "12.6"\n'
    project = write_project(tmp_path, GOOD, {"cuda": {"virtual-packages.yml": vpkgs}})
    assert_fails_cleanly(project, capsys, 3, "no virtual packages for platform 'linux-64'")


def test_unknown_flavor_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(tmp_path, GOOD)
    assert run_cli(project, "lock", "--check", "gpu") == 2
    assert "Unknown flavor 'gpu'" in capsys.readouterr().err


def test_bad_mirror_option_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(tmp_path, GOOD)
    assert run_cli(project, "lock", "--mirror", "conda-forge") == 2
    assert "is not NAME=URL" in capsys.readouterr().err


def test_default_virtual_packages_have_no_cuda() -> None:
    defaults = load_virtual_packages(None)
    for platform in ("linux-64", "linux-aarch64"):
        names = {p.name: p for p in defaults.for_platform(platform)}
        assert "__cuda" not in names
        assert names["__glibc"].version == "2.28"
        assert names["__linux"].version == "5.10"
        assert "__unix" in names
    assert {str(p) for p in defaults.for_platform("linux-aarch64")} >= {"__archspec=1=aarch64"}
    assert defaults.glibc("linux-64") == (2, 28)


def test_project_flavors(tmp_path: Path) -> None:
    write_project(tmp_path, GOOD, {"cpu": {}, "cuda": {"environment.yml": GOOD}})
    (tmp_path / "images" / "base").mkdir()
    loaded = load_project(tmp_path)
    assert sorted(loaded.flavors) == ["cpu", "cuda"]
    assert loaded.flavors["cpu"].lock_path == tmp_path.resolve() / "conda-lock.yml"
    assert loaded.flavors["cuda"].environment_files[-1].name == "environment.yml"
    assert len(loaded.flavors["cuda"].environment_files) == 2
    with pytest.raises(SpecError):
        load_project(tmp_path / "nowhere")


def test_project_without_flavors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = write_project(tmp_path, GOOD, {})
    assert run_cli(project, "lock") == 3
    assert "has no flavor" in capsys.readouterr().err
