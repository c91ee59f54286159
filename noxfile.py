"""nox sessions: thin wrappers around lockdock's CLI and pytest.

`nox -s tests` is the project's test command (README, .ci/run).
"""

from __future__ import annotations

from pathlib import Path

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


def _flavor_sessions(flavor: str) -> None:
    """``build-FLAVOR`` and ``test-FLAVOR`` for one flavor folder."""

    def build(session: nox.Session) -> None:
        session.install("-e", ".")
        session.run("lockdock", "build", flavor, *session.posargs)

    def gate(session: nox.Session) -> None:
        session.install("-e", ".")
        session.run("lockdock", "test", flavor, *session.posargs)

    build.__doc__ = (f"`lockdock build {flavor}` from the fetched store (posargs: "
                     "--base-image REF, --builder NAME, --force, ...).")
    gate.__doc__ = (f"`lockdock test {flavor}`: the gates in its image, report in .lockdock/ "
                    "(posargs: e.g. --image REF).")
    nox.session(name=f"build-{flavor}")(build)
    nox.session(name=f"test-{flavor}")(gate)


#: One build and one test session per flavor folder (what each flavor is, is lockdock's to
#: say: `lockdock flavors`); nox runs without lockdock installed, so this is the folder rule
#: of lockdock.spec: every folder of images/ holding a flavor.toml.
FLAVORS = sorted(p.parent.name for p in Path(__file__).parent.glob("images/*/flavor.toml"))
for _flavor in FLAVORS:
    _flavor_sessions(_flavor)


@nox.session
def dockerfile(session: nox.Session) -> None:
    """Regenerate the top-level Dockerfile from images/base + the default flavor's folder."""
    session.install("-e", ".")
    session.run("python", "-c", "from lockdock.image.dockerfile import "
                "write_top_level_dockerfile as w; print(w('.'))")


# --- CI: the GitHub workflows call only these (logic in lockdock and ci/) ---------------


@nox.session(name="ci-flavors")
def ci_flavors(session: nox.Session) -> None:
    """The flavors as a JSON list, into $GITHUB_OUTPUT as `names` (the CI matrices)."""
    import os

    session.install("-e", ".")
    names = str(session.run("lockdock", "flavors", "--json", silent=True)).strip()
    print(names)
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(f"names={names}\n")


@nox.session(name="ci-build")
def ci_build(session: nox.Session) -> None:
    """Fetch, build and gate one flavor on this runner (posargs: FLAVOR CONDA_SUBDIR [CACHE]:
    CACHE, e.g. `type=gha,scope=cpu-amd64`, is BuildKit's cache imported and exported)."""
    flavor, subdir, *cache = session.posargs
    session.install("-e", ".")
    session.run("lockdock", "fetch", flavor, "--platform", subdir)
    cache_args = [arg for spec in cache for arg in ("--cache-from", spec, "--cache-to", spec)]
    session.run("lockdock", "build", flavor, *cache_args)
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
