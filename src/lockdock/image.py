"""Images: store + lock -> a BuildKit build of ``images/base`` + ``images/<flavor>``.

Planning is pure (top half): the Dockerfile rendering, the tags, the labels, the
``SOURCE_DATE_EPOCH``, the ``docker buildx build`` argv, the store completeness check, and the
comparison of two OCI layouts. Running docker, downloading the installer's wheels and staging
the build inputs sit in small edge functions (bottom half).

One Dockerfile per build, rendered from three parts so every step has one definition:
``images/base/Dockerfile`` (the base stage), ``images/base/stages.Dockerfile`` (installer,
store and builder stages every flavor shares) and ``images/<flavor>/Dockerfile`` (the final
stage). The repository's top-level ``Dockerfile`` is the rendering for ``cpu``
(``write_top_level_dockerfile``; a test checks it is current).

Build inputs come as named build contexts, so the build itself never needs the network:
``store`` (the lock's artifacts for the platform, hard links into the fetched store) and
``installer`` (lockdock's installer modules + hash-pinned wheels of PyYAML and py-rattler, which
``lockdock build`` downloads with ``pip download --require-hashes``). Without them (plain
``docker build .``) the Dockerfile's default stages download both, verified by hash.

Reproducibility: ``SOURCE_DATE_EPOCH`` is the newest build timestamp among the lock's conda
packages (read from the archives the lock pins, so it is a function of the lock), BuildKit
rewrites every layer timestamp to it (``rewrite-timestamp=true``), provenance attestations
are off, and the installer writes byte-identical prefixes. ``verify_repro`` builds twice with
``--no-cache`` into OCI layouts and compares each platform's manifest digest; when they differ
it names the files that differ in each layer.

Tags (``plan_tags``): ``<name>:<flavor>-<sha256(lock file)[:12]>`` names the lock (suffix
``-<arch>`` for a platform other than this machine's), a descriptive
``<name>:<flavor>-py3.11-torch2.13[-cu12.8]`` and the moving ``<name>:latest``; ``name``
defaults to ``lockdock/<flavor>`` (what ``lockdock test`` and ``publish`` look for). The image
is exported under a temporary name and tagged only after the build succeeded, so a failed build
leaves no content-addressed tag.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lockdock.errors import (
    BuildError,
    EngineError,
    IntegrityError,
    NetworkError,
    ReproducibilityError,
    SpecError,
    UsageError,
)
from lockdock.fsutil import sha256_file, write_text_atomic
from lockdock.lockfile import Lock, LockedArtifact, read_lock
from lockdock.progress import say
from lockdock.spec import Flavor, Project, load_project
from lockdock.store import default_store, inventory, plan_fetch, relative_path

ENV_PREFIX = "/opt/conda/envs/lockdock"

# Labels (gates.py reads the io.lockdock.* ones).
FLAVOR_LABEL = "io.lockdock.flavor"
PLATFORM_LABEL = "io.lockdock.platform"
LOCK_HASH_LABEL = "io.lockdock.lock.content-hash"
LOCK_SHA256_LABEL = "io.lockdock.lock.sha256"
PYTHON_LABEL = "io.lockdock.python.version"
TORCH_LABEL = "io.lockdock.pytorch.version"
CUDA_LABEL = "io.lockdock.cuda.version"
CUDA_DRIVER_LABEL = "io.lockdock.cuda.min-driver"
OCI = "org.opencontainers.image"

DOCKER_TO_CONDA = {"linux/amd64": "linux-64", "linux/arm64": "linux-aarch64"}
CONDA_TO_DOCKER = {v: k for k, v in DOCKER_TO_CONDA.items()}

#: Dockerfile parts, rendered in this order (paths relative to the project root).
BASE_DOCKERFILE = Path("images/base/Dockerfile")
STAGES_DOCKERFILE = Path("images/base/stages.Dockerfile")
INSTALLER_REQUIREMENTS = Path("images/base/installer-requirements.txt")
#: The marker of the unpinned default in images/base/Dockerfile (not a real digest).
#: lockdock modules the installer needs inside the build (stdlib + PyYAML + py-rattler only).
INSTALLER_MODULES = (
    "__init__.py", "errors.py", "fsutil.py", "lockfile.py", "store.py", "install.py",
    "progress.py",
)  # fmt: skip
#: Python versions a base may have (images/base/README.md): PyYAML wheels for each.
INSTALLER_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
_MANYLINUX = {
    "linux-64": ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"),
    "linux-aarch64": ("manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_28_aarch64"),
}
#: Paths of a project never sent to BuildKit (rendered next to the Dockerfile).
DOCKERIGNORE = (
    ".lockdock", ".git", ".venv", ".nox", "**/__pycache__", "**/*.pyc", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", "*.egg-info", "build", "dist",
)  # fmt: skip
#: When the lock's conda packages carry no timestamp (2000-01-01T00:00:00Z).
FALLBACK_EPOCH = 946684800
GENERATED_HEADER = (
    "# GENERATED by lockdock from images/base/Dockerfile, images/base/stages.Dockerfile and\n"
    "# images/{flavor}/Dockerfile: edit those, then run `nox -s dockerfile`. Builds the default\n"
    "# CPU dev image with plain `docker build .` (downloading the lock's artifacts with hash\n"
    "# checks); `lockdock build {flavor}` builds the same stages from the fetched store with no\n"
    "# network.\n"
)

#: Minimum Linux x86_64 driver of each CUDA toolkit release (NVIDIA's CUDA Toolkit release
#: notes, table "CUDA Toolkit and Corresponding Driver Versions", GA releases).
CUDA_MIN_DRIVER = {
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}
#: Per major version, the driver that runs any of its minor versions (minor version
#: compatibility; newer toolkit features may need the table above).
CUDA_MAJOR_MIN_DRIVER = {"11": "450.80.02", "12": "525.60.13", "13": "580.65.06"}


# --- planning (pure) ----------------------------------------------------------------------


def conda_platform(docker_platform: str) -> str:
    try:
        return DOCKER_TO_CONDA[docker_platform]
    except KeyError:
        raise UsageError(
            f"Unknown platform {docker_platform!r}: lockdock builds "
            f"{', '.join(sorted(DOCKER_TO_CONDA))}."
        ) from None


def _major_minor(version: str) -> str:
    return ".".join(version.split("+", 1)[0].split(".")[:2])


@dataclass(frozen=True)
class LockVersions:
    python: str | None
    torch: str | None
    cuda: str | None  # major.minor, None for a CPU build


def lock_versions(artifacts: Iterable[LockedArtifact]) -> LockVersions:
    """Python, PyTorch and CUDA versions as one platform's lock has them.

    Python from conda's ``python``; PyTorch from conda's ``pytorch`` or pip's ``torch``; CUDA
    from conda-forge's ``cuda-version``, else ``cuda-cudart``, else pip's
    ``nvidia-cuda-runtime-cu1x`` / ``nvidia-cuda-runtime`` (CUDA 13 wheels), else the torch
    wheel's local label (``+cu128``). A CPU torch (conda build ``cpu_*``, wheel ``+cpu``) has
    no CUDA, whatever else is locked.
    """
    by_name: dict[str, LockedArtifact] = {}
    for artifact in artifacts:
        by_name.setdefault(artifact.name.lower(), artifact)
    python = by_name.get("python")
    torch = by_name.get("pytorch") or by_name.get("torch")
    cpu_torch = torch is not None and (
        (torch.build or "").startswith("cpu") or torch.version.endswith("+cpu")
    )
    cuda: str | None = None
    if not cpu_torch:
        for name in ("cuda-version", "cuda-cudart"):
            if name in by_name:
                cuda = by_name[name].version
                break
        if cuda is None:
            cuda = next(
                (a.version for n, a in sorted(by_name.items())
                 if n == "nvidia-cuda-runtime" or n.startswith("nvidia-cuda-runtime-cu")),
                None,
            )  # fmt: skip
        if cuda is None and torch is not None and "+cu" in torch.version:
            digits = torch.version.split("+cu", 1)[1]
            if digits.isdigit() and len(digits) > 1:
                cuda = f"{digits[:-1]}.{digits[-1]}"
    return LockVersions(
        python=python.version if python else None,
        torch=torch.version if torch else None,
        cuda=_major_minor(cuda) if cuda else None,
    )


def cuda_min_driver(cuda: str) -> str | None:
    """The minimum NVIDIA driver for CUDA ``major.minor`` (None when unknown)."""
    return CUDA_MIN_DRIVER.get(cuda) or CUDA_MAJOR_MIN_DRIVER.get(cuda.split(".")[0])


def source_date_epoch(timestamps: Iterable[datetime | int | None]) -> int:
    """The newest package timestamp (seconds; conda's millisecond stamps are converted).

    No image can be older than its newest package, and the packages are pinned by hash, so
    this is a property of the lock. ``FALLBACK_EPOCH`` when no package has a timestamp.
    """
    seconds = []
    for stamp in timestamps:
        if stamp is None:
            continue
        value = int(stamp.timestamp()) if isinstance(stamp, datetime) else int(stamp)
        if value > 100_000_000_000:  # milliseconds
            value //= 1000
        if value > 0:
            seconds.append(value)
    return max(seconds, default=FALLBACK_EPOCH)


def _tag_safe(text: str) -> str:
    return re.sub(r"[^\w.-]", "_", text)[:128]


def arch_of(docker_platform: str) -> str:
    return docker_platform.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class TagPlan:
    content_addressed: str  # name:tag
    descriptive: tuple[str, ...]
    moving: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return (self.content_addressed, *self.descriptive, *self.moving)


def descriptor(versions: LockVersions) -> str:
    parts = []
    if versions.python:
        parts.append(f"py{_major_minor(versions.python)}")
    if versions.torch:
        parts.append(f"torch{_major_minor(versions.torch)}")
    if versions.cuda:
        parts.append(f"cu{versions.cuda}")
    return "-".join(parts)


def plan_tags(
    name: str, flavor: str, lock_sha256: str, versions: LockVersions, platform: str, native: str
) -> TagPlan:
    """The local tags of one build (see the module docstring)."""
    suffix = "" if platform == native else f"-{arch_of(platform)}"
    ca = f"{name}:{_tag_safe(f'{flavor}-{lock_sha256[:12]}{suffix}')}"
    described = descriptor(versions)
    descriptive = (f"{name}:{_tag_safe(f'{flavor}-{described}{suffix}')}",) if described else ()
    moving = (f"{name}:{_tag_safe('latest' + suffix)}",)
    return TagPlan(ca, descriptive, moving)


def default_name(flavor: str) -> str:
    return f"lockdock/{flavor}"


def plan_labels(
    *,
    flavor: str,
    platform: str,
    lock: Lock,
    lock_sha256: str,
    versions: LockVersions,
    epoch: int,
    version_tag: str,
    source: str | None,
    revision: str | None,
) -> dict[str, str]:
    """Every label of the image (lock facts, flavor, platform, OCI annotations)."""
    conda = conda_platform(platform)
    labels = {
        FLAVOR_LABEL: flavor,
        PLATFORM_LABEL: platform,
        LOCK_HASH_LABEL: str(lock.content_hash.get(conda, "")),
        LOCK_SHA256_LABEL: lock_sha256,
        PYTHON_LABEL: versions.python or "none",
        TORCH_LABEL: versions.torch or "none",
        CUDA_LABEL: versions.cuda or "none",
        f"{OCI}.created": datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        f"{OCI}.version": version_tag,
        f"{OCI}.source": source or "unknown",
        f"{OCI}.revision": revision or "unknown",
    }
    if versions.cuda:
        driver = cuda_min_driver(versions.cuda)
        if driver:
            labels[CUDA_DRIVER_LABEL] = driver
    return labels


def missing_artifacts(
    artifacts: Sequence[LockedArtifact], present: frozenset[str] | set[str]
) -> list[LockedArtifact]:
    """The lock's artifacts that the store lacks (store.py's fetch plan)."""
    return plan_fetch(artifacts, present)


def _split_preamble(text: str) -> tuple[list[str], list[str]]:
    """(global ARG lines before the first FROM, every other line in order)."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^\s*FROM\s", line, re.IGNORECASE):
            head = lines[:index]
            args = [ln for ln in head if re.match(r"^\s*ARG\s", ln, re.IGNORECASE)]
            rest = [ln for ln in head if ln not in args] + lines[index:]
            return args, rest
    raise SpecError("A Dockerfile part has no FROM line: " + (lines[0] if lines else "(empty)"))


def render_dockerfile(parts: Sequence[tuple[str, str]], flavor: str) -> str:
    """One Dockerfile from ``(path, text)`` parts: global ARGs hoisted, then every stage.

    Global ``ARG``s (before a part's first ``FROM``) must precede the first ``FROM`` of the
    whole file to stay global, so they are gathered at the top (first definition wins); the
    parts' comments stay where they were.
    """
    args: dict[str, str] = {}
    bodies = []
    for path, text in parts:
        preamble, rest = _split_preamble(text)
        for line in preamble:
            arg_name = re.split(r"[=\s]", line.strip()[3:].strip(), maxsplit=1)[0]
            args.setdefault(arg_name, line.strip())
        bodies.append("\n".join([f"# ---- {path} ----", *rest]).rstrip() + "\n")
    return (
        GENERATED_HEADER.format(flavor=flavor)
        + "\n"
        + "\n".join(args.values())
        + "\n\n"
        + "\n".join(bodies)
    )


def dockerfile_parts(root: Path, flavor: Flavor) -> list[tuple[str, str]]:
    parts = []
    for rel in (BASE_DOCKERFILE, STAGES_DOCKERFILE, flavor.dockerfile.relative_to(root)):
        path = root / rel
        try:
            parts.append((rel.as_posix(), path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise SpecError(
                f"{path} is missing: a lockdock project's images/ needs base/Dockerfile, "
                "base/stages.Dockerfile and <flavor>/Dockerfile (copy them from lockdock)."
            ) from None
    return parts


def default_base_image(base_dockerfile_text: str) -> str | None:
    match = re.search(r"^\s*ARG\s+BASE_IMAGE=(\S+)", base_dockerfile_text, re.MULTILINE)
    return match.group(1) if match else None


def base_image_problem(reference: str | None) -> str | None:
    if not reference:
        return "images/base/Dockerfile has no default BASE_IMAGE; pass --base-image REF"
    return None


@dataclass(frozen=True)
class BuildPlan:
    project_root: Path
    flavor: str
    platform: str  # docker platform
    conda_platform: str
    lock_path: Path  # relative to the project root
    lock_sha256: str
    epoch: int
    base_image: str | None  # None: the Dockerfile's default
    tags: TagPlan
    labels: Mapping[str, str]
    dockerfile: Path
    store_context: Path
    installer_context: Path
    sbom_context: Path
    builder: str | None = None
    target: str | None = None
    extra_args: Mapping[str, str] = field(default_factory=dict)


def buildx_argv(
    plan: BuildPlan, *, output: str, metadata_file: Path, no_cache: bool = False
) -> list[str]:
    """``docker buildx build`` for ``plan`` with ``output`` (``--output`` value)."""
    argv = ["docker", "buildx", "build"]
    if plan.builder:
        argv += ["--builder", plan.builder]
    argv += [
        "--platform", plan.platform,
        "--file", str(plan.dockerfile),
        "--build-context", f"store={plan.store_context}",
        "--build-context", f"installer={plan.installer_context}",
        "--build-context", f"sbom={plan.sbom_context}",
        "--build-arg", f"LOCK={plan.lock_path.as_posix()}",
        "--build-arg", f"SOURCE_DATE_EPOCH={plan.epoch}",
        "--provenance=false",
        "--sbom=false",
        "--output", output,
        "--metadata-file", str(metadata_file),
    ]  # fmt: skip
    if plan.base_image:
        argv += ["--build-arg", f"BASE_IMAGE={plan.base_image}"]
    for key, value in sorted(plan.extra_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in sorted(plan.labels.items()):
        argv += ["--label", f"{key}={value}"]
    if plan.target:
        argv += ["--target", plan.target]
    if no_cache:
        argv.append("--no-cache")
    argv.append(str(plan.project_root))
    return argv


def image_output(name: str) -> str:
    """A docker-format tarball on stdout, for ``docker load``.

    dockerd 26's own image exporter refuses ``rewrite-timestamp`` (it always unpacks), so
    the image is exported as a tarball and loaded; the containerd image store keeps its
    manifest digest.
    """
    return f"type=docker,name={name},dest=-,oci-mediatypes=true,rewrite-timestamp=true"


def oci_output(dest: Path) -> str:
    return f"type=oci,dest={dest},tar=false,rewrite-timestamp=true"


# --- comparing two builds (pure over OCI layouts on disk) ---------------------------------


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hexdigest


def _json_blob(layout: Path, digest: str) -> Any:
    return json.loads(_blob(layout, digest).read_text(encoding="utf-8"))


def platform_manifests(layout: Path) -> dict[str, str]:
    """``{"linux/amd64": "sha256:..."}`` for every image manifest in an OCI layout."""
    found: dict[str, str] = {}

    def walk(descriptors: Iterable[Mapping[str, Any]], platform: str | None) -> None:
        for desc in descriptors:
            media = str(desc.get("mediaType", ""))
            plat = desc.get("platform") or {}
            here = f"{plat['os']}/{plat['architecture']}" if plat else platform
            if media.endswith("image.index.v1+json") or media.endswith("manifest.list.v2+json"):
                walk(_json_blob(layout, desc["digest"]).get("manifests", []), here)
            else:
                if here is None:
                    manifest = _json_blob(layout, desc["digest"])
                    config = _json_blob(layout, manifest["config"]["digest"])
                    here = f"{config.get('os')}/{config.get('architecture')}"
                if here != "unknown/unknown":  # attestation manifests
                    found[here] = str(desc["digest"])

    index = json.loads((layout / "index.json").read_text(encoding="utf-8"))
    walk(index.get("manifests", []), None)
    return found


def _members(path: Path) -> dict[str, str]:
    """Layer tar member -> description (type, mode, owner, mtime, content digest or target)."""
    out: dict[str, str] = {}
    with tarfile.open(path, mode="r:*") as archive:
        for member in archive:
            if member.isfile():
                handle = archive.extractfile(member)
                digest = hashlib.sha256(handle.read() if handle else b"").hexdigest()[:16]
                what = f"file sha256:{digest}"
            elif member.issym() or member.islnk():
                what = f"link -> {member.linkname}"
            else:
                what = f"type {member.type!r}"
            out[member.name] = (
                f"{what} mode {member.mode:o} uid {member.uid} gid {member.gid} "
                f"mtime {member.mtime}"
            )
    return out


def diff_members(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    return [
        f"{name}: {a.get(name, '<absent>')} != {b.get(name, '<absent>')}"
        for name in sorted(set(a) | set(b))
        if a.get(name) != b.get(name)
    ]


def explain_difference(layout_a: Path, layout_b: Path, manifest_a: str, manifest_b: str,
                       limit: int = 30) -> list[str]:
    """Lines naming what differs between two image manifests: config fields, layer files."""
    lines: list[str] = []
    man_a, man_b = _json_blob(layout_a, manifest_a), _json_blob(layout_b, manifest_b)
    if man_a["config"]["digest"] != man_b["config"]["digest"]:
        conf_a = _json_blob(layout_a, man_a["config"]["digest"])
        conf_b = _json_blob(layout_b, man_b["config"]["digest"])
        for key in sorted(set(conf_a) | set(conf_b)):
            if key != "rootfs" and conf_a.get(key) != conf_b.get(key):
                lines.append(f"image config field {key!r} differs")
    layers_a, layers_b = man_a.get("layers", []), man_b.get("layers", [])
    if len(layers_a) != len(layers_b):
        lines.append(f"layer count differs: {len(layers_a)} != {len(layers_b)}")
    for number, (la, lb) in enumerate(zip(layers_a, layers_b, strict=False), start=1):
        if la["digest"] == lb["digest"]:
            continue
        differences = diff_members(
            _members(_blob(layout_a, la["digest"])), _members(_blob(layout_b, lb["digest"]))
        )
        if not differences:
            differences = ["(same files; the archive bytes or compression differ)"]
        lines.append(f"layer {number} ({la['digest'][:19]} != {lb['digest'][:19]}):")
        lines += [f"  {line}" for line in differences]
    return lines[:limit]


# --- edges --------------------------------------------------------------------------------


def native_platform() -> str:
    machine = os.uname().machine
    return {"x86_64": "linux/amd64", "aarch64": "linux/arm64", "arm64": "linux/arm64"}.get(
        machine, f"linux/{machine}"
    )


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
            raise EngineError(
                f"buildx has no builder {builder!r} ({inspect.stderr.strip()[-300:]}).",
                hint="Create it with `docker buildx create --name NAME ...` or drop --builder.",
            )


def docker_client() -> Any:
    """A Docker SDK client for the local engine; EngineError when it does not answer."""
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
    """The engine's id (with the containerd store: manifest digest) of a local image."""
    import docker.errors

    try:
        return str(docker_client().images.get(reference).id)
    except docker.errors.ImageNotFound:
        return None


def git_facts(root: Path) -> tuple[str | None, str | None]:
    """(remote URL or None, HEAD commit or None) of the project's git checkout."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
            )
        except FileNotFoundError:
            return None
        return proc.stdout.strip() or None if proc.returncode == 0 else None

    return git("config", "--get", "remote.origin.url"), git("rev-parse", "HEAD")


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
    wanted = {relative_path(a) for a in artifacts}
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


def stage_sbom(flavor: Flavor, conda_platform: str, epoch: int, dest: Path) -> Path:
    """The ``sbom`` build context: the lock's CycloneDX SBOM, shipped in the image."""
    from lockdock.sbom import SBOM_FILE, write_sbom

    write_sbom(flavor.lock_path, conda_platform, dest / SBOM_FILE, name=flavor.name, epoch=epoch)
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
    source = Path(__file__).resolve().parent
    modules = dest / "src" / "lockdock"
    modules.mkdir(parents=True, exist_ok=True)
    for name in INSTALLER_MODULES:
        content = (source / name).read_text(encoding="utf-8")
        target = modules / name
        if not target.is_file() or target.read_text(encoding="utf-8") != content:
            write_text_atomic(target, content)
    return dest


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_rendered_dockerfile(project: Project, flavor: Flavor, dest: Path) -> Path:
    text = render_dockerfile(dockerfile_parts(project.root, flavor), flavor.name)
    write_text_atomic(dest, text)
    write_text_atomic(Path(f"{dest}.dockerignore"), "\n".join(DOCKERIGNORE) + "\n")
    return dest


def write_top_level_dockerfile(root: Path, flavor: str = "cpu") -> Path:
    """(Re)write ``<root>/Dockerfile``: the rendering for ``flavor`` (``nox -s dockerfile``)."""
    project = load_project(root)
    (chosen,) = project.select([flavor])
    path = project.root / "Dockerfile"
    write_text_atomic(path, render_dockerfile(dockerfile_parts(project.root, chosen), flavor))
    return path


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


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@dataclass(frozen=True)
class BuildResult:
    flavor: str
    platform: str
    reference: str  # the content-addressed tag
    digest: str
    tags: tuple[str, ...]
    built: bool  # False: the tag existed and nothing was done
    record: Path | None = None


def build_record_path(project_root: Path, flavor: str, platform: str) -> Path:
    return project_root / ".lockdock" / "builds" / flavor / f"{arch_of(platform)}.json"


def _flavor_lock(
    project_dir: Path, flavor_name: str, platform: str | None
) -> tuple[Project, Flavor, Lock, str, str]:
    project = load_project(project_dir)
    (flavor,) = project.select([flavor_name])
    docker_platform = platform or native_platform()
    conda = conda_platform(docker_platform)
    if not flavor.lock_path.is_file():
        raise SpecError(
            f"Flavor {flavor.name} has no lock at {flavor.lock_path}: run `lockdock lock`."
        )
    return project, flavor, read_lock(flavor.lock_path), docker_platform, conda


def planned_tags(
    project_dir: Path, flavor_name: str, *, platform: str | None = None, name: str | None = None
) -> TagPlan:
    """The tags ``lockdock build`` gives this flavor's image (reads the lock only)."""
    _, flavor, lock, docker_platform, conda = _flavor_lock(project_dir, flavor_name, platform)
    return plan_tags(name or default_name(flavor.name), flavor.name, sha256_file(flavor.lock_path),
                     lock_versions(lock.select(conda, ["main"])), docker_platform,
                     native_platform())


def plan_build(
    project_dir: Path,
    flavor_name: str,
    *,
    platform: str | None = None,
    base_image: str | None = None,
    builder: str | None = None,
    name: str | None = None,
    store: Path | None = None,
) -> BuildPlan:
    """Everything one build needs, checked: flavor, lock, store, base image. Stages inputs."""
    project, flavor, lock, docker_platform, conda = _flavor_lock(project_dir, flavor_name,
                                                                  platform)
    artifacts = lock.select(conda, ["main"])
    store = Path(store) if store else default_store(project.root)
    missing = missing_artifacts(artifacts, inventory(store))
    if missing:
        listing = ", ".join(f"{a.name} {a.version} ({a.filename})" for a in missing)
        raise IntegrityError(
            f"Store {store} lacks {len(missing)} artifact(s) of {flavor.lock_path} for "
            f"{conda}: {listing}. Run `lockdock fetch {flavor.name} --platform {conda}` "
            "first; the build reads artifacts only from the store."
        )
    base_text = (project.root / BASE_DOCKERFILE).read_text(encoding="utf-8") \
        if (project.root / BASE_DOCKERFILE).is_file() else ""
    problem = None if base_image else base_image_problem(default_base_image(base_text))
    if problem:
        raise UsageError(problem + ".")
    lock_sha = sha256_file(flavor.lock_path)
    versions = lock_versions(artifacts)
    epoch = source_date_epoch(package_timestamps(store, artifacts))
    tags = planned_tags(project_dir, flavor_name, platform=platform, name=name)
    source, revision = git_facts(project.root)
    labels = plan_labels(
        flavor=flavor.name, platform=docker_platform, lock=lock, lock_sha256=lock_sha,
        versions=versions, epoch=epoch, version_tag=tags.content_addressed.rsplit(":", 1)[1],
        source=source, revision=revision,
    )  # fmt: skip
    work = project.state_dir / "build"
    return BuildPlan(
        project_root=project.root,
        flavor=flavor.name,
        platform=docker_platform,
        conda_platform=conda,
        lock_path=flavor.lock_path.relative_to(project.root),
        lock_sha256=lock_sha,
        epoch=epoch,
        base_image=base_image,
        tags=tags,
        labels=labels,
        dockerfile=write_rendered_dockerfile(project, flavor, work / f"{flavor.name}.Dockerfile"),
        store_context=stage_store(store, artifacts, work / f"store-{flavor.name}-{conda}"),
        installer_context=prepare_installer(project, conda, work / f"installer-{conda}"),
        sbom_context=stage_sbom(flavor, conda, epoch, work / f"sbom-{flavor.name}-{conda}"),
        builder=builder,
    )


def build(
    project_dir: Path,
    flavor_name: str,
    *,
    platform: str | None = None,
    base_image: str | None = None,
    builder: str | None = None,
    name: str | None = None,
    force: bool = False,
    store: Path | None = None,
    no_cache: bool = False,
) -> BuildResult:
    """Build one flavor for one platform into the local engine and tag it (see module doc)."""
    check_engine(builder)
    tags = planned_tags(project_dir, flavor_name, platform=platform, name=name)
    ca = tags.content_addressed
    existing = local_image_id(ca)
    if existing and not force:
        say(f"{ca} already exists ({existing}): its lock is unchanged, nothing to build "
            "(--force rebuilds).")
        print(existing)
        return BuildResult(flavor_name, platform or native_platform(), ca, existing, tags.all,
                           built=False)
    plan = plan_build(project_dir, flavor_name, platform=platform, base_image=base_image,
                      builder=builder, name=name, store=store)
    # Exported under a temporary tag of the same name; tagged for real only on success.
    repository = plan.tags.content_addressed.rsplit(":", 1)[0]
    temporary = f"{repository}:building-{os.getpid()}-{os.urandom(4).hex()}"
    with tempfile.TemporaryDirectory(prefix="lockdock-build.") as tmp:
        metadata = Path(tmp) / "metadata.json"
        argv = buildx_argv(plan, output=image_output(temporary), metadata_file=metadata,
                           no_cache=no_cache)
        say(f"building {plan.flavor} ({plan.platform}) with SOURCE_DATE_EPOCH={plan.epoch}")
        try:
            run_buildx(argv, f"The build of {plan.flavor} ({plan.platform})", load=True)
            digest = str(_read_metadata(metadata).get("containerimage.digest") or "")
            client = docker_client()
            image = client.images.get(temporary)
            digest = digest or str(image.id)
            for tag in plan.tags.all:
                repository, tag_name = tag.rsplit(":", 1)
                image.tag(repository, tag_name)
        finally:
            _untag(temporary)
    record = build_record_path(plan.project_root, plan.flavor, plan.platform)
    write_text_atomic(record, json.dumps({
        "flavor": plan.flavor,
        "platform": plan.platform,
        "reference": ca,
        "digest": digest,
        "tags": list(plan.tags.all),
        "lock": plan.lock_path.as_posix(),
        "lock_sha256": plan.lock_sha256,
        "source_date_epoch": plan.epoch,
        "labels": dict(plan.labels),
    }, indent=2, sort_keys=True) + "\n")  # fmt: skip
    say(f"built {plan.flavor} ({plan.platform}): {', '.join(plan.tags.all)}")
    print(digest)
    return BuildResult(plan.flavor, plan.platform, ca, digest, plan.tags.all, True, record)


def _untag(reference: str) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
        docker_client().images.remove(reference, noprune=True)


@dataclass(frozen=True)
class ReproResult:
    flavor: str
    digests: tuple[Mapping[str, str], Mapping[str, str]]
    differences: tuple[str, ...]

    @property
    def identical(self) -> bool:
        return self.digests[0] == self.digests[1] and bool(self.digests[0])


def verify_repro(
    project_dir: Path,
    flavor_name: str,
    *,
    platform: str | None = None,
    base_image: str | None = None,
    builder: str | None = None,
    store: Path | None = None,
    keep: Path | None = None,
) -> ReproResult:
    """Build twice from scratch (``--no-cache``) and compare per-platform manifest digests.

    ReproducibilityError naming the differing files when they differ. ``keep``: leave the two
    OCI layouts there (for inspection) instead of a temporary folder.
    """
    check_engine(builder)
    plan = plan_build(project_dir, flavor_name, platform=platform, base_image=base_image,
                      builder=builder, store=store)
    with contextlib.ExitStack() as stack:
        work = keep or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="lockdock-repro."))
        )
        layouts = []
        for attempt in ("a", "b"):
            layout = work / f"build-{attempt}"
            shutil.rmtree(layout, ignore_errors=True)
            argv = buildx_argv(plan, output=oci_output(layout),
                               metadata_file=work / f"metadata-{attempt}.json", no_cache=True)
            say(f"verify-repro: build {attempt} of {plan.flavor} ({plan.platform}), --no-cache")
            run_buildx(argv, f"Reproducibility build {attempt} of {plan.flavor}")
            layouts.append(layout)
        first, second = platform_manifests(layouts[0]), platform_manifests(layouts[1])
        differences: list[str] = []
        for plat in sorted(set(first) | set(second)):
            if first.get(plat) != second.get(plat):
                differences.append(f"{plat}: {first.get(plat)} != {second.get(plat)}")
                if plat in first and plat in second:
                    differences += explain_difference(
                        layouts[0], layouts[1], first[plat], second[plat]
                    )
        result = ReproResult(plan.flavor, (first, second), tuple(differences))
    for plat, digest in sorted(first.items()):
        say(f"verify-repro {plan.flavor} {plat}: {digest} / {second.get(plat)}")
    if not result.identical:
        raise ReproducibilityError(
            f"Two --no-cache builds of {plan.flavor} ({plan.platform}) differ:\n"
            + "\n".join(differences)
        )
    say(f"verify-repro {plan.flavor}: identical")
    return result



def _ready_to_build(project_dir: Path, flavor: str, builder: str | None) -> None:
    """Engine first (before any work), then the flavor. The lock's freshness against its
    inputs is the caller's to check (`lockdock build` runs `lock --check` first)."""
    check_engine(builder)
    load_project(project_dir).select([flavor])


def build_command(
    project_dir: Path,
    flavor: str,
    *,
    platform: str | None = None,
    base_image: str | None = None,
    builder: str | None = None,
    name: str | None = None,
    force: bool = False,
) -> BuildResult:
    """What ``lockdock build`` and ``nox -s build-cpu|build-cuda`` run."""
    _ready_to_build(project_dir, flavor, builder)
    return build(project_dir, flavor, platform=platform, base_image=base_image,
                 builder=builder, name=name, force=force)


def verify_repro_command(
    project_dir: Path,
    flavor: str,
    *,
    platform: str | None = None,
    base_image: str | None = None,
    builder: str | None = None,
    keep: Path | None = None,
) -> ReproResult:
    """What ``lockdock verify-repro`` runs."""
    _ready_to_build(project_dir, flavor, builder)
    return verify_repro(project_dir, flavor, platform=platform, base_image=base_image,
                        builder=builder, keep=keep)
