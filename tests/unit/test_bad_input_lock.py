"""Bad input to ``lockdock lock`` and ``lock --check``: environment.yml values YAML reads as
something other than a string, a flavor that cannot be solved among others that can, a
directory where a lock should be written, malformed mirrors. Same promise as
test_bad_input.py: the documented exit code, the culprit named, no traceback, no file
changed."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lockdock.errors import LocalFileError
from lockdock.lock import check_lock_target, plan_flavor
from lockdock.solve import SolvedFlavor, Timings, write_locks
from lockdock.spec import load_project
from lockdock.workspace import Workspace
from tests.fixtures.channel import (
    CPU_ENV,
    CUDA_OVERLAY,
    CUDA_VIRTUAL_PACKAGES,
    ServedChannel,
    write_project,
)
from tests.unit.test_bad_input import assert_clean_failure, run_cli, snapshot

HEAD = "channels:\n  - file:///nonexistent-channel\nplatforms:\n  - linux-64\n"
OLD_LOCK = "version: 1\nmetadata: {}\npackage: []\n# the old lock, which must survive\n"


def outside_state(root: Path, project: Path) -> dict[str, object]:
    """``snapshot(root)`` but lockdock's own state folder (repodata cache, store)."""
    state = Workspace(project).state.relative_to(root).as_posix()
    return {k: v for k, v in snapshot(root).items() if not k.startswith(state)}


def two_flavors(root: Path, channel: str) -> Path:
    """cpu + cuda (overlay, virtual packages), each with an old lock standing in place."""
    project = write_project(root, CPU_ENV.format(channel=channel), {
        "cpu": {},
        "cuda": {"environment.yml": CUDA_OVERLAY, "virtual-packages.yml": CUDA_VIRTUAL_PACKAGES},
    })  # fmt: skip
    for lock in (project / "conda-lock.yml", project / "images/cuda/conda-lock.yml"):
        lock.write_text(OLD_LOCK, encoding="utf-8")
    return project


# --- finding 4: environment.yml values that are not strings -------------------------


ENV_CASES = [
    # (id, environment.yml, line named, words the message must hold)
    ("non-scalar-top-level-key", HEAD + "? [a, b]\n: c\ndependencies:\n  - hello\n",
     5, "a top-level key must be a plain name, not a list"),
    ("number-as-dependency", HEAD + "dependencies:\n  - 1.5\n",
     6, "a dependency must be a match spec string (e.g. `numpy >=1.26`) or a `pip:` list, "
        "not the number 1.5 (quote it to make it a string)"),
    ("empty-dependency", HEAD + "dependencies:\n  - hello\n  -\n",
     7, "not an empty value"),
    ("list-as-nested-key", HEAD + "dependencies:\n  - ? [a]\n    : b\n",
     6, "only a `pip:` list may be nested in `dependencies:`; this entry's key is a list"),
    ("number-as-pip-requirement", HEAD + "dependencies:\n  - pip:\n    - 1.5\n",
     7, "a `pip:` entry must be a requirement string (e.g. `requests>=2`), not the number 1.5"),
    ("number-as-channel", "channels:\n  - 1\nplatforms:\n  - linux-64\ndependencies: [hello]\n",
     2, "each entry of `channels:` must be a string, not the number 1"),
    ("scalar-pip-repositories", HEAD + "pip-repositories: 5\ndependencies: [hello]\n",
     5, "`pip-repositories:` must be a list of strings, not the number 5."),
    ("list-as-category", HEAD + "category: [dev]\ndependencies: [hello]\n",
     5, "`category:` must be a category name such as `dev`, not a list"),
    ("word-as-allow-pypi-requests", HEAD + "allow-pypi-requests: maybe\ndependencies: [hello]\n",
     5, "`allow-pypi-requests:` must be true or false, not 'maybe'"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "words"), [c[1:] for c in ENV_CASES],
                         ids=[c[0] for c in ENV_CASES])  # fmt: skip
def test_environment_value_of_the_wrong_kind_names_file_line_and_expectation(
    text: str, line: int, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(tmp_path / "project", text)
    before = snapshot(tmp_path)
    code, output = run_cli(["-C", str(project), "lock", "--check"], capsys)
    assert_clean_failure(code, output, 3, f"{project / 'environment.yml'}, line {line}: ")
    assert words in output, output
    assert "Node(" not in output and "internal error" not in output, output
    assert snapshot(tmp_path) == before


def test_quoted_values_and_empty_pip_lists_still_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(tmp_path / "project", HEAD + (
        "category: main\nallow-pypi-requests: false\npip-repositories: ['https://x.example']\n"
        "dependencies:\n  - '1.5'\n  - pip:\n"
    ))  # fmt: skip
    code, output = run_cli(["-C", str(project), "lock", "--check"], capsys)
    assert code == 6 and "no lock file" in output, output  # valid inputs, only the lock missing


# --- finding 11: one flavor cannot be solved: no lock is written ----------------------


def test_a_flavor_that_cannot_be_solved_leaves_every_lock_unchanged(
    tmp_path: Path, served_channel: ServedChannel, capsys: pytest.CaptureFixture[str]
) -> None:
    project = two_flavors(tmp_path / "project", served_channel.url)
    (project / "images/cuda/environment.yml").write_text("dependencies:\n  - nosuchpkg\n")
    before = outside_state(tmp_path, project)
    code, output = run_cli(["-C", str(project), "lock"], capsys)
    assert_clean_failure(code, output, 4, "flavor 'cuda' cannot be satisfied")
    assert outside_state(tmp_path, project) == before  # cpu, solved first, is untouched too
    code, output = run_cli(["-C", str(project), "lock", "cpu"], capsys)
    assert code == 0, output  # cpu alone solves: the failure above was cuda's alone


def _solved(project: Path) -> list[SolvedFlavor]:
    flavors = load_project(project).select()
    return [SolvedFlavor(plan_flavor(f), (), {}, Timings()) for f in flavors]


def test_a_rename_that_fails_puts_the_locks_already_replaced_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = two_flavors(tmp_path / "project", "file:///nonexistent-channel")
    solved = _solved(project)
    second = solved[1].plan.flavor.lock_path
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst) == second and Path(src).name == second.name:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    before = snapshot(tmp_path)
    with pytest.raises(LocalFileError, match=re.escape(f"'cuda' to {second}: no space left")):
        write_locks(solved)
    assert snapshot(tmp_path) == before  # cpu's lock is back; no temp folder is left


def test_write_locks_writes_every_lock_and_leaves_no_temp_folder(tmp_path: Path) -> None:
    project = two_flavors(tmp_path / "project", "file:///nonexistent-channel")
    results = write_locks(_solved(project))
    assert [r.flavor for r in results] == ["cpu", "cuda"]
    for result in results:
        assert "content_hash" in result.lock_path.read_text(encoding="utf-8")
        assert not [p for p in result.lock_path.parent.iterdir() if p.name.startswith(".conda")]


# --- finding 12: the lock cannot be written: refused before solving -------------------


def test_a_directory_where_the_lock_goes_is_refused_before_solving(
    tmp_path: Path, served_channel: ServedChannel, capsys: pytest.CaptureFixture[str]
) -> None:
    project = two_flavors(tmp_path / "project", served_channel.url)
    (project / "conda-lock.yml").unlink()
    (project / "conda-lock.yml").mkdir()
    before = outside_state(tmp_path, project)
    code, output = run_cli(["-C", str(project), "lock", "cpu"], capsys)
    assert_clean_failure(
        code, output, 16,
        f"Could not write the lock of flavor 'cpu' to {project / 'conda-lock.yml'}: a "
        "directory is in its place.",
    )  # fmt: skip
    cache = Workspace(project).rattler_cache
    assert list(cache.iterdir()) == []  # probed for writing, nothing fetched: no solve began
    assert outside_state(tmp_path, project) == before


def _flavor(lock_path: Path) -> Any:
    return SimpleNamespace(name="cpu", lock_path=lock_path)


def test_check_lock_target_refuses_a_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "images").write_text("not a folder")
    target = tmp_path / "images" / "conda-lock.yml"
    expected = f"to {target} (at {tmp_path / 'images'}): Not a directory."
    with pytest.raises(LocalFileError, match=re.escape(expected)):
        check_lock_target(_flavor(target))


def test_check_lock_target_refuses_a_folder_that_refuses_new_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(tmp_path / ".conda-lock.yml.probe.x"))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(LocalFileError, match="permission denied"):
        check_lock_target(_flavor(tmp_path / "conda-lock.yml"))


def test_check_lock_target_accepts_a_writable_folder_and_leaves_nothing(tmp_path: Path) -> None:
    check_lock_target(_flavor(tmp_path / "conda-lock.yml"))
    assert list(tmp_path.iterdir()) == []


# --- finding 14: lock --check parses mirrors as lock does ----------------------------


def test_lock_check_refuses_a_malformed_mirror_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = write_project(tmp_path / "project", HEAD + "dependencies: [hello]\n")
    code, output = run_cli(["-C", str(project), "lock", "--check", "--mirror", "foo"], capsys)
    assert_clean_failure(code, output, 2, "--mirror 'foo' is not NAME=URL")


def test_lock_check_refuses_a_malformed_mirrors_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = write_project(tmp_path / "project", HEAD + "dependencies: [hello]\n")
    monkeypatch.setenv("LOCKDOCK_MIRRORS", "garbage")
    code, output = run_cli(["-C", str(project), "lock", "--check"], capsys)
    assert_clean_failure(code, output, 2, "LOCKDOCK_MIRRORS 'garbage' is not NAME=URL")
