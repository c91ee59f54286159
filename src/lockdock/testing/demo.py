"""A demo lockdock project in a directory: what the image tests, benchmarks and ``nox -s demo``
build end to end on a machine that reaches no conda channel.

- ``build_demo_channel``: a local conda channel with the CPython running this process packaged
  as ``python`` (``lockdock.testing.cpython``) and a few small packages; serve it with
  ``lockdock.testing.ChannelServer``.
- ``write_demo_project``: ``environment.yml`` naming ``conda-forge`` exactly as a production
  project does (the lock is made with ``--mirror conda-forge=<local channel>``, see
  ``mirror_option``), a ``pip:`` part (``DEMO_PIP``: torch, JupyterLab, ...), and
  ``images/`` copied from lockdock's source checkout. The base image is given to
  ``lockdock build --base-image`` (the debootstrap one from
  ``lockdock.testing.baseimage`` in tests).
- ``demo_environment``: the environment the lockdock commands run with, so uv also sees the
  local CPU torch wheel that pip's configuration offers on the test machines.

Same code path as production: only the channel URL and the base image differ.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from lockdock.testing.channel import FakePackage, build_channel
from lockdock.testing.cpython import build_cpython_package
from lockdock.workspace import STATE_DIR

#: The channel folder's name under the served directory.
CHANNEL_NAME = "demo-forge"
#: The channel the demo's environment.yml names (and which the lock step mirrors).
PRODUCTION_CHANNEL = "conda-forge"
#: The torch the demo locks with pip: a local CPU wheel on the test machines.
CPU_TORCH = "torch==2.13.0"
#: The demo's pip part: a notebook environment people would use (JupyterLab, its kernel,
#: numpy) next to PyTorch, plus pytest for the gates' payload. Hash-locked from PyPI by uv
#: like every pip requirement; JupyterLab's major version is bounded because the browser test
#: drives its interface (``tests/engine/test_devenv_lab.py``).
DEMO_PIP: tuple[str, ...] = (
    CPU_TORCH, "numpy", "pytest", "jupyterlab>=4.4,<5", "ipykernel>=6.29,<8",
)
#: Where pip's configuration finds local wheels on the test machines (torch CPU).
LOCAL_WHEELS = Path("/opt/wheels")

SMALL_PACKAGES: tuple[FakePackage, ...] = (
    # The packaged CPython carries its own pip; this metadata-only package is what a
    # `pip:` section makes the solver ask for (conda-forge's python has no pip inside).
    FakePackage("pip", "23.2.1", build="pyh0_0", noarch="python", depends=("python",)),
    FakePackage("hello", "1.0", build="0", files={"share/hello/version": "1.0\n"}),
    FakePackage(
        "tinylib", "0.3", build="pyh0_0", noarch="python", depends=("python",),
        files={"site-packages/tinylib/__init__.py": "ANSWER = 42\n"},
    ),
)  # fmt: skip


def lockdock_checkout() -> Path:
    """lockdock's source checkout (it holds ``images/``), where this module runs from."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "images" / "base" / "Dockerfile").is_file():
        raise RuntimeError(f"{root} is not lockdock's source checkout: no images/base/Dockerfile")
    return root


def build_demo_channel(served_dir: Path) -> Path:
    """Build the demo channel at ``served_dir/demo-forge`` (CPython + small packages)."""
    channel = build_channel(served_dir / CHANNEL_NAME, SMALL_PACKAGES, index=False)
    build_cpython_package(channel)  # indexes the channel too
    return channel


def mirror_option(channel_url: str) -> list[str]:
    """``lockdock lock`` options that fetch ``conda-forge`` from the local channel."""
    return ["--mirror", f"{PRODUCTION_CHANNEL}={channel_url}"]


def environment_yml(
    pip: Sequence[str] = (CPU_TORCH,),
    conda: Sequence[str] = ("hello", "tinylib"),
    python: str = "3.11.*",
) -> str:
    lines = [
        "name: demo",
        "channels:",
        f"  - {PRODUCTION_CHANNEL}",
        "platforms:",
        "  - linux-64",
        "dependencies:",
        f"  - python {python}",
        *(f"  - {spec}" for spec in conda),
    ]
    if pip:
        lines += ["  - pip:", *(f"    - {req}" for req in pip)]
    return "\n".join(lines) + "\n"


def write_demo_project(
    root: Path,
    *,
    flavors: Sequence[str] = ("cpu",),
    pip: Sequence[str] = DEMO_PIP,
    conda: Sequence[str] = ("hello", "tinylib"),
    overlays: Mapping[str, str] | None = None,
) -> Path:
    """A project at ``root``: environment.yml + images/{base,<flavors>} from the checkout."""
    source = lockdock_checkout() / "images"
    root.mkdir(parents=True, exist_ok=True)
    (root / "environment.yml").write_text(environment_yml(pip, conda), encoding="utf-8")
    images = root / "images"
    shutil.copytree(source / "base", images / "base", dirs_exist_ok=True)
    for flavor in flavors:
        (images / flavor).mkdir(parents=True, exist_ok=True)
        for name in ("Dockerfile", "flavor.toml"):
            shutil.copy2(source / flavor / name, images / flavor / name)
        overlay = (overlays or {}).get(flavor)
        if overlay is not None:
            (images / flavor / "environment.yml").write_text(
                textwrap.dedent(overlay), encoding="utf-8"
            )
    (root / ".gitignore").write_text(f"{STATE_DIR}/\n", encoding="utf-8")
    return root


def demo_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` plus ``UV_FIND_LINKS`` pointing uv at the local wheels (CPU torch).

    pip finds them through its configuration; uv, which locks the pip part, does not read
    pip's configuration.
    """
    env = dict(base if base is not None else os.environ)
    if LOCAL_WHEELS.is_dir():
        links = env.get("UV_FIND_LINKS")
        env["UV_FIND_LINKS"] = f"{LOCAL_WHEELS} {links}" if links else str(LOCAL_WHEELS)
    return env
