"""``docker run -it IMAGE`` as a person sees it, through a real terminal (tmux): the prompt,
the environment active, the lock listed, no error lines on login, and ``pip install`` into the
locked environment refused with lockdock's explanation (images/base/README.md, "pip in the
container").
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.fixtures.images import DemoImage

pytestmark = [pytest.mark.engine, pytest.mark.network]

PREFIX = "/opt/conda/envs/lockdock"
WAIT = 120  # seconds for the container's shell and each command (2 shared cores)
ERROR_WORDS = ("error", "warning", "no such file", "not found", "permission denied", "bash:")


class Terminal:
    """A tmux session of 200x50 running one command; ``run`` types a line and returns what it
    printed, up to a sentinel the line echoes when done."""

    def __init__(self, tmux: str, session: str) -> None:
        self.tmux, self.session, self.count = tmux, session, 0

    def screen(self) -> str:
        proc = subprocess.run([self.tmux, "capture-pane", "-p", "-J", "-S", "-", "-t",
                               self.session], capture_output=True, text=True, check=False)
        return proc.stdout

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.5)
        pytest.fail(f"{text!r} never appeared in the terminal:\n{self.screen()}")

    def run(self, line: str) -> str:
        self.count += 1
        sentinel = f"done-{self.count}-$((6*7))"  # the echo prints ...-42, the typed line not
        before = self.screen()
        subprocess.run([self.tmux, "send-keys", "-t", self.session, "-l",
                        f"{line}; echo {sentinel}"], check=True)
        subprocess.run([self.tmux, "send-keys", "-t", self.session, "Enter"], check=True)
        screen = self.wait_for(f"done-{self.count}-42")
        new = screen[len(before.rstrip()):] if screen.startswith(before.rstrip()) else screen
        return new.split(f"done-{self.count}-42")[0]


@pytest.fixture
def terminal(tmux: str, demo_image: DemoImage) -> Iterator[Terminal]:
    session = f"lockdock-test-{uuid.uuid4().hex[:8]}"
    container = session
    subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50",
                    f"docker run --rm -it --name {container} {demo_image.reference}"],
                   check=True)
    try:
        yield Terminal(tmux, session)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True, check=False)


def test_docker_run_it_is_an_activated_shell_that_guards_the_lock(terminal: Terminal) -> None:
    login = terminal.wait_for("(lockdock) lockdock@")
    assert not [line for line in login.splitlines()
                if any(word in line.lower() for word in ERROR_WORDS)], login
    assert login.rstrip().endswith(":~$"), login  # bash's prompt, in the home directory
    assert f"{PREFIX}/bin/python" in terminal.run("which python")
    assert "CONDA_PREFIX=" + PREFIX in terminal.run("env | grep ^CONDA_PREFIX=")
    listing = terminal.run("lockdock-env | grep -E '^(torch|jupyterlab|python) |locked packages'")
    assert f"{PREFIX}: " in listing and " locked packages " in listing
    assert "torch 2.13.0" in listing and "jupyterlab 4." in listing
    for pip in ("pip install tinydb", "python -m pip install --user tinydb"):
        refused = terminal.run(f'{pip}; echo "exit=$?"')
        assert "externally-managed-environment" in refused, refused
        assert "lockdock lock" in refused and "exit=1" in refused
    assert "ModuleNotFoundError" in terminal.run("python -c 'import tinydb'")
    print(f"\n--- tmux capture ---\n{terminal.screen().rstrip()}")
