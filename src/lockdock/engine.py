"""The Docker engine and BuildKit: every call lockdock makes to them goes through here.

Planning code never imports this module; the edges that build, load, tag, inspect and run
images do.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

from lockdock.errors import BuildError, EngineError, LockdockError, UsageError
from lockdock.platform import Platform
from lockdock.registry import parse_reference


def native_platform() -> Platform:
    """The platform images build for by default: this machine's (the engine runs here)."""
    return Platform.host()


def check_engine(builder: str | None = None) -> None:
    """EngineError saying what to install/start when docker, the engine or buildx is missing."""
    if shutil.which("docker") is None:
        raise EngineError(
            "The docker client is not installed.",
            hint="Install Docker (client, engine and the buildx plugin); on the project's "
            "Debian machines, as root: `ci/engine start`.",
        )
    version = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if version.returncode != 0:
        raise EngineError(
            f"The Docker engine does not answer ({version.stderr.strip()[-300:]}).",
            hint="Start it (as root: `ci/engine start`, which installs dockerd and buildx).",
        )
    buildx = subprocess.run(
        ["docker", "buildx", "version"], capture_output=True, text=True, check=False
    )
    if buildx.returncode != 0:
        raise EngineError(
            "The docker buildx plugin is missing: lockdock builds with BuildKit through buildx.",
            hint="Install docker-buildx (Debian/Ubuntu package `docker-buildx`, or Docker's "
            "`docker-buildx-plugin`); as root on the project's machines: `ci/engine start`.",
        )
    if builder:
        inspect = subprocess.run(
            ["docker", "buildx", "inspect", builder], capture_output=True, text=True, check=False
        )
        if inspect.returncode != 0:
            raise builder_problem(builder, inspect.stderr)


def builder_problem(builder: str, stderr: str) -> EngineError | UsageError:
    """What ``docker buildx inspect BUILDER`` failing means: a builder that does not exist is
    the command line's mistake (``--builder``, exit 2); any other failure is the engine's."""
    detail = stderr.strip()[-300:]
    hint = "Create it with `docker buildx create --name NAME ...` or drop --builder."
    if "no builder" in stderr.lower():
        return UsageError(f"--builder {builder!r}: buildx has no builder of that name "
                          f"({detail}). `docker buildx ls` lists the builders.", hint=hint)
    return EngineError(f"buildx could not inspect the builder {builder!r} ({detail}).",
                       hint=hint)


@functools.cache
def docker_client() -> Any:
    """The Docker SDK client for the local engine (one per process); EngineError when the
    engine does not answer."""
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise EngineError(
            f"The Docker engine does not answer ({error}).",
            hint="Start it (as root: `ci/engine start`).",
        ) from None
    return client


def local_image_id(reference: str) -> str | None:
    """The engine's id (with the containerd store: manifest digest) of a local image; None
    when the engine has none. UsageError for a reference that is not one (checked with
    ``parse_reference`` before the engine is asked, and the engine's own refusal too)."""
    import docker.errors

    parse_reference(reference)
    try:
        return str(docker_client().images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as error:
        raise lookup_problem(reference, error.status_code, error.explanation or str(error)) \
            from None


def lookup_problem(reference: str, status: int | None, explanation: str) -> LockdockError:
    """The engine refusing a local image lookup: a 4xx is the reference's fault (exit 2), any
    other answer the engine's (exit 9)."""
    if status is not None and 400 <= status < 500:
        return UsageError(f"The Docker engine refuses the image reference {reference!r}: "
                          f"{explanation}.")
    return EngineError(f"The Docker engine failed to look up the image {reference!r} "
                       f"(HTTP {status}): {explanation}.")


def untag(reference: str) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
        docker_client().images.remove(reference, noprune=True)


def tag(image_reference: str, tags: Sequence[str]) -> None:
    """Give the local image ``image_reference`` every ``name:tag`` of ``tags``."""
    image = docker_client().images.get(image_reference)
    for full in tags:
        repository, name = full.rsplit(":", 1)
        image.tag(repository, name)


def image_id(reference: str) -> str:
    return str(docker_client().images.get(reference).id)


def run_buildx(argv: Sequence[str], what: str, *, load: bool = False) -> None:
    """Run buildx, streaming its log to stderr; BuildError with the log's tail on failure.

    ``load``: buildx writes an image tarball to stdout, piped into ``docker load``.
    """
    env = dict(os.environ)
    env.setdefault("BUILDKIT_PROGRESS", "plain")
    tail: deque[str] = deque(maxlen=40)
    loader = None
    with subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE if load else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=not load,
        env=env,
    ) as proc:
        if load:
            loader = subprocess.Popen(
                ["docker", "load", "--quiet"], stdin=proc.stdout, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            assert proc.stdout is not None
            proc.stdout.close()  # the loader holds it now
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            tail.append(line.rstrip())
            sys.stderr.write(line)
        code = proc.wait()
    load_output = ""
    load_code = 0
    if loader is not None:
        load_output = loader.communicate()[0] or ""
        load_code = loader.returncode
    if code != 0:
        raise BuildError(
            f"{what} failed (docker buildx exit {code}). Last lines of the build log:\n"
            + "\n".join(tail)
        )
    if load_code != 0:
        raise BuildError(f"{what}: `docker load` of the built image failed: {load_output}")
