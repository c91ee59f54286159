"""Build inputs, staged on disk (edges): the rendered Dockerfile, the ``store`` context
(this lock's artifacts as hard links), the ``installer`` context (the installer package +
hash-pinned wheels of its dependencies, downloaded with ``pip download --require-hashes``),
and the ``sbom`` context. ``prepare_build`` reads what planning needs, plans, then stages.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from lockdock.context import FlavorContext
from lockdock.errors import NetworkError, SpecError
from lockdock.fsutil import write_bytes_atomic, write_text_atomic
from lockdock.git import git_facts
from lockdock.image.dockerfile import (
    BASE_DOCKERFILE,
    default_base_image,
    layer_instructions,
    write_rendered_dockerfile,
)
from lockdock.image.plan import BuildPlan, check_base_image, check_image_name, plan_build
from lockdock.installer.built import unbuilt_sdists
from lockdock.installer.lockfile import LockedArtifact
from lockdock.installer.store import inventory, relative_path
from lockdock.spec import Project

INSTALLER_REQUIREMENTS = Path("images/base/installer-requirements.txt")

#: The marker of the unpinned default in images/base/Dockerfile (not a real digest).
#: Python versions a base may have (images/base/README.md): PyYAML wheels for each.
INSTALLER_PYTHONS = ("3.10", "3.11", "3.12", "3.13")

_MANYLINUX = {
    "linux-64": ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"),
    "linux-aarch64": ("manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_28_aarch64"),
}



def package_timestamps(store: Path, artifacts: Iterable[LockedArtifact]) -> list[datetime | None]:
    """Build timestamps of the lock's conda packages, read from the archives in the store."""
    from rattler.package import IndexJson

    stamps: list[datetime | None] = []
    for artifact in artifacts:
        if artifact.manager != "conda":
            continue
        index = IndexJson.from_package_archive(store / relative_path(artifact))
        stamps.append(index.timestamp)
    return stamps

def stage_store(store: Path, artifacts: Sequence[LockedArtifact], dest: Path) -> Path:
    """``dest``: exactly the artifacts' store entries, as hard links (copies across devices).

    The build context then depends on the lock only, not on whatever else the store holds.
    """
    from lockdock.installer.built import store_entries

    wanted = store_entries(artifacts, store)  # + wheels `fetch` built from locked sdists
    if dest.exists():
        for path in sorted(dest.rglob("*"), reverse=True):
            rel = path.relative_to(dest).as_posix()
            if path.is_file() and rel not in wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    for rel in sorted(wanted):
        target = dest / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(store / rel, target)
        except OSError:
            shutil.copy2(store / rel, target)
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def stage_sbom(context: FlavorContext, epoch: int, dest: Path) -> Path:
    """The ``sbom`` build context: the lock's CycloneDX SBOM. The builder's ``shipped`` stage
    gives it fixed times inside the build (``lockdock.installer.layers --ship``); here it is
    written with today's, so that BuildKit's context sync always sees a new SBOM."""
    from lockdock.facts import IMAGE_CATEGORIES
    from lockdock.sbom import SBOM_FILE, SbomRequest, write_request

    write_request(SbomRequest(context.lock, context.platform.subdir, IMAGE_CATEGORIES,
                              context.flavor.name, epoch, context.lock_sha256), dest / SBOM_FILE)
    return dest


def prepare_installer(project: Project, platform: str, dest: Path) -> Path:
    """The ``installer`` build context: requirements, hash-checked wheels, installer modules.

    Wheels are downloaded once per requirements file and platform (``pip download
    --require-hashes`` for every Python a base may have); NetworkError when pip cannot.
    """
    requirements = project.root / INSTALLER_REQUIREMENTS
    if not requirements.is_file():
        raise SpecError(
            f"{requirements} is missing: the builder installs the installer's dependencies "
            "from it (copy images/base/ from lockdock)."
        )
    text = requirements.read_text(encoding="utf-8")
    stamp = hashlib.sha256(f"{platform}\n{text}".encode()).hexdigest()
    wheels = dest / "wheels"
    stamp_file = dest / ".wheels.sha256"
    if not (wheels.is_dir() and stamp_file.is_file() and stamp_file.read_text() == stamp):
        staging = Path(tempfile.mkdtemp(prefix=".wheels.", dir=_mkdir(dest)))
        try:
            for python in INSTALLER_PYTHONS:
                argv = [
                    sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--require-hashes", "--disable-pip-version-check",
                    "--python-version", python, "--implementation", "cp",
                    *(f"--platform={tag}" for tag in _MANYLINUX[platform]),
                    "-r", str(requirements), "-d", str(staging),
                ]  # fmt: skip
                proc = subprocess.run(argv, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise NetworkError(
                        f"pip could not download the installer's wheels ({requirements}, "
                        f"Python {python}, {platform}): {proc.stderr.strip()[-800:]}"
                    )
            shutil.rmtree(wheels, ignore_errors=True)
            os.replace(staging, wheels)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        write_text_atomic(stamp_file, stamp)
    write_text_atomic(dest / "requirements.txt", text)
    _copy_installer_sources(dest / "src" / "lockdock")
    return dest

def _copy_installer_sources(target: Path) -> None:
    """Mirror ``INSTALLER_SOURCES`` of this lockdock into ``target`` (unchanged files kept)."""
    from lockdock.installer import INSTALLER_SOURCES

    source = Path(__file__).resolve().parents[1]  # src/lockdock (this is lockdock/image/)
    wanted: dict[Path, bytes] = {}
    for name in INSTALLER_SOURCES:
        path = source / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            wanted[file.relative_to(source)] = file.read_bytes()
    for existing in sorted(target.rglob("*"), reverse=True) if target.is_dir() else []:
        relative = existing.relative_to(target)
        if existing.is_file() and relative not in wanted:
            existing.unlink()
        elif existing.is_dir() and not any(existing.iterdir()):
            existing.rmdir()
    for relative, content in wanted.items():
        file = target / relative
        if not file.is_file() or file.read_bytes() != content:
            file.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(file, content)

def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def prepare_build(
    context: FlavorContext,
    *,
    base_image: str | None = None,
    builder: str | None = None,
    name: str | None = None,
    store: Path | None = None,
) -> BuildPlan:
    """Read what the plan needs (store inventory, package timestamps, git), plan, stage."""
    from lockdock.engine import native_platform

    workspace = context.workspace
    base_path = context.project.root / BASE_DOCKERFILE
    base_default = default_base_image(base_path.read_text(encoding="utf-8")) \
        if base_path.is_file() else None
    # the command line's mistakes first, before the store is read (plan_build checks again)
    if name is not None:
        check_image_name(name, context.flavor.name)
    check_base_image(base_image, base_default)
    store = Path(store) if store else workspace.store
    present = inventory(store)
    timestamps: list[datetime | int | None] = []
    if not [a for a in context.artifacts if relative_path(a) not in present]:
        timestamps = list(package_timestamps(store, context.artifacts))
    flavor_dockerfile = context.flavor.dockerfile
    flavor_layers = layer_instructions(flavor_dockerfile.read_text(encoding="utf-8")) \
        if flavor_dockerfile.is_file() else []
    plan = plan_build(
        context, store=store, present=present, timestamps=timestamps,
        git=git_facts(context.project.root), native=native_platform(),
        work=workspace.build_dir, base_image=base_image, base_default=base_default,
        builder=builder, name=name, flavor_layers=flavor_layers,
        unbuilt=unbuilt_sdists(context.artifacts, store, present),
    )  # fmt: skip
    stage_inputs(plan, context, store)
    return plan


def stage_inputs(plan: BuildPlan, context: FlavorContext, store: Path) -> None:
    """Write every input ``plan`` names (Dockerfile, store, installer and sbom contexts)."""
    write_rendered_dockerfile(context.project, context.flavor, plan.dockerfile)
    stage_store(store, context.artifacts, plan.store_context)
    prepare_installer(context.project, plan.conda_platform, plan.installer_context)
    stage_sbom(context, plan.epoch, plan.sbom_context)
