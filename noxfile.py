"""nox sessions: thin wrappers around lockdock's CLI and pytest.

`nox -s tests` is the project's test command (README, .ci/run).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = "torch==2.13.0"  # a local CPU wheel on our machines; see README


def _install(session: nox.Session) -> None:
    session.install("-e", ".[test]", TORCH)


@nox.session
def tests(session: nox.Session) -> None:
    """The full suite: unit, end-to-end, engine (starts the engine when root)."""
    _install(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff and mypy."""
    _install(session)
    session.run("ruff", "check", "src", "tests", "noxfile.py", "benchmarks")
    session.run("mypy")
