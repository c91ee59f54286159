"""The Docker engine and a locally built base image, for tests, benchmarks and the demo.

No registry can be pulled from on the test machines, so the base image that stands in for
Miniconda is made here: ``debootstrap --variant=minbase bookworm`` plus what
``images/base/README.md`` asks of a base (python3 with venv, bash, CA certificates, useradd)
and the shared libraries the CPython test package links against, then ``docker import``.
Its tag is derived from every input of that recipe, so it is built once per machine and
reused by every session, benchmark and demo (``ensure_base_image``).

``engine_problem`` / ``ensure_engine`` check the engine and start it with ``ci/engine start``
(a source checkout's provisioning script) when it does not answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Bump when the recipe changes in a way the inputs below do not show.
RECIPE_VERSION = 1
REPOSITORY = "lockdock-test-base"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: What images/base/README.md's contract needs, plus the libraries of the CPython fixture
#: (``lockdock.testing.cpython`` packages the host's pyenv CPython, which links to these).
PACKAGES: tuple[str, ...] = (
    "bash",
    "ca-certificates",
    "passwd",
    "python3",
    "python3-venv",
    "libssl3",
    "libsqlite3-0",
    "libffi8",
    "zlib1g",
    "libbz2-1.0",
    "liblzma5",
    "libreadline8",
    "libncursesw6",
    "libtinfo6",
    "libuuid1",
    "libgdbm6",
    "libgdbm-compat4",
    "libexpat1",
    "libnsl2",
    "libtirpc3",
    "libcrypt1",
    "libgomp1",
)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class BaseRecipe:
    suite: str = SUITE
    mirror: str = MIRROR
    packages: tuple[str, ...] = PACKAGES
    arch: str = "amd64"

    @property
    def tag(self) -> str:
        """``lockdock-test-base:bookworm-<12 hex>``: a digest of every input of the recipe."""
        inputs = json.dumps(
            {
                "recipe": RECIPE_VERSION,
                "suite": self.suite,
                "mirror": self.mirror,
                "packages": sorted(self.packages),
                "arch": self.arch,
            },
            sort_keys=True,
        )
        return f"{REPOSITORY}:{self.suite}-{hashlib.sha256(inputs.encode()).hexdigest()[:12]}"

    def debootstrap_argv(self, target: Path) -> list[str]:
        return [
            "debootstrap",
            "--variant=minbase",
            f"--arch={self.arch}",
            f"--include={','.join(sorted(self.packages))}",
            self.suite,
            str(target),
            self.mirror,
        ]


def host_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def repo_root() -> Path | None:
    """The source checkout this module runs from (it holds ``ci/engine``), if any."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "ci" / "engine").is_file() else None


# --- engine -------------------------------------------------------------------------------


def engine_problem() -> str | None:
    """Why the engine is not usable (``None`` when the daemon and buildx both answer)."""
    if shutil.which("docker") is None:
        return "the docker client is not installed"
    version = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if version.returncode != 0:
        return f"the Docker engine does not answer: {version.stderr.strip()[-300:]}"
    buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False)
    if buildx.returncode != 0:
        return "the docker buildx plugin is missing"
    return None


def ensure_engine() -> str | None:
    """Start the engine with ``ci/engine start`` if it does not answer.

    Returns ``None`` when the engine answers afterwards, else why it could not be started.
    """
    problem = engine_problem()
    if problem is None:
        return None
    root = repo_root()
    if root is None:
        return f"{problem}, and ci/engine (a source checkout's script) is not there to start it"
    if os.geteuid() != 0:
        return f"{problem}; ci/engine start needs root"
    proc = subprocess.run(
        [str(root / "ci" / "engine"), "start"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return f"{problem}; `ci/engine start` failed: {proc.stderr.strip()[-1500:]}"
    return engine_problem()


# --- base image ---------------------------------------------------------------------------


def image_exists(reference: str) -> bool:
    proc = subprocess.run(
        ["docker", "image", "inspect", reference], capture_output=True, check=False
    )
    return proc.returncode == 0


@contextlib.contextmanager
def _file_lock(name: str) -> Iterator[None]:
    """One builder per tag on this machine (parallel sessions wait for the first)."""
    path = Path(tempfile.gettempdir()) / f"{name.replace(':', '_').replace('/', '_')}.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: Sequence[str], what: str, **kwargs: object) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def ensure_base_image(recipe: BaseRecipe | None = None, *, force: bool = False) -> str:
    """The tag of the debootstrap base image, built and ``docker import``-ed if missing.

    Needs root (debootstrap) and the engine. RuntimeError with the tool's output on failure.
    """
    recipe = recipe or BaseRecipe(arch=host_arch())
    tag = recipe.tag
    with _file_lock(tag):
        if not force and image_exists(tag):
            return tag
        if shutil.which("debootstrap") is None:
            raise RuntimeError("debootstrap is not installed (`ci/engine start` installs it)")
        with tempfile.TemporaryDirectory(prefix="lockdock-base.", dir="/var/tmp") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _run(recipe.debootstrap_argv(rootfs), "debootstrap")
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (rootfs / leftover).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            tar = subprocess.Popen(
                ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
                stdout=subprocess.PIPE,
            )
            try:
                _run(
                    [
                        "docker", "import",
                        "--change", f"ENV PATH={DEFAULT_PATH}",
                        "--change", 'CMD ["bash"]',
                        "-", tag,
                    ],
                    "docker import",
                    stdin=tar.stdout,
                )  # fmt: skip
            finally:
                if tar.stdout is not None:
                    tar.stdout.close()
                tar.wait()
    return tag
