"""The command line: every command has help, exit codes match errors.py and the README's
table, and the top-level guard turns an unexpected exception into one paragraph."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lockdock import cli, errors
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
COMMANDS = sorted(cli.cli.commands)


def test_the_commands_are_the_pipeline() -> None:
    assert {"lock", "fetch", "install", "build", "verify-repro", "test", "publish", "pin",
            "devcontainer", "sbom", "render", "flavors"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(command, "--help") == 0
    out = capsys.readouterr().out
    assert f"Usage: lockdock {command}" in out
    summary = cli.cli.commands[command].help or ""
    assert summary.strip(), f"`lockdock {command}` has no help text"


def test_exit_codes_are_one_per_class_and_all_in_the_readme() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, errors.LockdockError)]
    direct = [c for c in classes if c.__bases__ == (errors.LockdockError,)]
    assert len({c.exit_code for c in direct}) == len(direct), "two meanings share a code"
    codes = {c.exit_code for c in classes}
    table = REPO.joinpath("README.md").read_text(encoding="utf-8").split("## Exit codes", 1)[1]
    documented = {int(n) for n in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}
    assert codes | {0, 1, 130} <= documented


def test_an_unknown_option_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("build", "--no-such-option") == 2
    assert "No such option" in capsys.readouterr().err


def test_an_unexpected_exception_is_a_bug_report_not_a_traceback(tmp_path: Path) -> None:
    """A crash inside a command: exit 1, one paragraph, the traceback in the named file."""
    code = (
        "import sys, lockdock.cli as c\n"
        "import lockdock.spec\n"
        "def boom(*a, **k): raise ZeroDivisionError('boom')\n"
        "lockdock.spec.load_project = boom\n"
        "c.main(['flavors'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "This is a bug in lockdock" in done.stderr
    crash = re.search(r"traceback is in (\S+?);", done.stderr)
    assert crash, done.stderr
    saved = Path(crash.group(1)).read_text(encoding="utf-8")
    assert "ZeroDivisionError: boom" in saved and "Traceback" in saved


def test_flavors_lists_the_repository_flavors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("flavors", project=REPO) == 0
    out = capsys.readouterr().out
    assert "cpu: cpu, lock conda-lock.yml" in out and "cuda: cuda extends cpu" in out


def test_python_dash_m_lockdock_is_the_command(tmp_path: Path) -> None:
    """``python -m lockdock`` runs the CLI with its exit codes (2: a usage error)."""
    ran = subprocess.run([sys.executable, "-m", "lockdock", "--help"], capture_output=True,
                         text=True, cwd=tmp_path, check=False)  # fmt: skip
    assert ran.returncode == 0 and "Usage: lockdock" in ran.stdout, ran.stderr
    wrong = subprocess.run([sys.executable, "-m", "lockdock", "no-such-command"],
                           capture_output=True, text=True, cwd=tmp_path, check=False)  # fmt: skip
    assert wrong.returncode == 2 and "No such command" in wrong.stderr
