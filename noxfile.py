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
    """ruff and mypy (no torch: nothing type-checked imports it)."""
    session.install("-e", ".[test]")
    session.run("ruff", "check", "src", "tests", "noxfile.py", "benchmarks")
    session.run("mypy")


@nox.session
def lock(session: nox.Session) -> None:
    """`lockdock lock` (posargs: flavors, --check, --mirror NAME=URL), as the CLI runs it."""
    session.install("-e", ".")
    session.run("lockdock", "lock", *session.posargs)


def _build(session: nox.Session, flavor: str) -> None:
    """`lockdock build FLAVOR` (posargs: --base-image REF, --builder NAME, --force, ...)."""
    session.install("-e", ".")
    session.run("lockdock", "build", flavor, *session.posargs)


@nox.session(name="build-cpu")
def build_cpu(session: nox.Session) -> None:
    """Build the cpu image from the fetched store (BuildKit, no network, reproducible)."""
    _build(session, "cpu")


@nox.session(name="build-cuda")
def build_cuda(session: nox.Session) -> None:
    """Build the cuda image from the fetched store."""
    _build(session, "cuda")


@nox.session
def dockerfile(session: nox.Session) -> None:
    """Regenerate the top-level Dockerfile from images/base + the default flavor's folder."""
    session.install("-e", ".")
    session.run("python", "-c",
                "from lockdock.image.dockerfile import write_top_level_dockerfile as w; print(w('.'))")


def _gate(session: nox.Session, flavor: str) -> None:
    """`lockdock test FLAVOR` in the flavor's image (posargs: e.g. --image REF)."""
    session.install("-e", ".")
    session.run("lockdock", "test", flavor, *session.posargs)


@nox.session(name="test-cpu")
def test_cpu(session: nox.Session) -> None:
    """Gate the cpu image: the tests/image payload inside it, health report in .lockdock/."""
    _gate(session, "cpu")


@nox.session(name="test-cuda")
def test_cuda(session: nox.Session) -> None:
    """Gate the cuda image (GPU checks run when the host has a GPU, else skip with a reason)."""
    _gate(session, "cuda")


# --- CI: the GitHub workflows call only these (logic in lockdock and ci/) ---------------


@nox.session(name="ci-build")
def ci_build(session: nox.Session) -> None:
    """Fetch, build and gate one flavor on this runner (posargs: FLAVOR CONDA_SUBDIR)."""
    flavor, subdir = session.posargs
    session.install("-e", ".")
    session.run("lockdock", "fetch", flavor, "--platform", subdir)
    session.run("lockdock", "build", flavor)
    session.run("lockdock", "test", flavor)


@nox.session(name="ci-publish-platform")
def ci_publish_platform(session: nox.Session) -> None:
    """Push this runner's gated image as <content tag>-<arch> (posargs: FLAVOR REGISTRY/NAME)."""
    flavor, repository = session.posargs
    session.install("-e", ".")
    # GHCR names are lowercase; github.repository may not be.
    session.run("lockdock", "publish", flavor, "--registry", repository.lower(),
                "--platform-only")


@nox.session(name="ci-release")
def ci_release(session: nox.Session) -> None:
    """Index the platforms, push every tag, sign and attest (posargs: FLAVOR REGISTRY/NAME)."""
    flavor, repository = session.posargs
    session.install("-e", ".")
    session.run("lockdock", "publish", flavor, "--registry", repository.lower(), "--merge")
    session.run("python", "ci/sign_and_attest.py", flavor, "--repository", repository.lower())


@nox.session
def relock(session: nox.Session) -> None:
    """Weekly relock of one flavor: lock, build, gate, compare (posargs: FLAVOR)."""
    session.install("-e", ".")
    session.run("python", "ci/relock.py", "flavor", *session.posargs)


@nox.session(name="relock-body")
def relock_body(session: nox.Session) -> None:
    """The relock pull request's body from every flavor's report."""
    session.install("-e", ".")
    session.run("python", "ci/relock.py", "body", ".lockdock/relock", "-o",
                ".lockdock/relock/body.md")


@nox.session
def demo(session: nox.Session) -> None:
    """The offline pipeline end to end: local channel, lock, fetch, build, gate, publish to
    127.0.0.1:5000, pin (needs root: ci/engine, debootstrap). Ends with the pinned reference."""
    _install(session)
    session.run("python", "ci/demo.py", *session.posargs)
