"""End to end on the real engine: local channel + pip torch CPU -> lock -> fetch -> build ->
run -> verify inside -> no-op rebuild -> layer reuse -> verify-repro; and the failure paths.

Every lockdock step runs as the CLI (``python -m lockdock.cli``). The project is the demo one
(``lockdock.testing.demo``): ``environment.yml`` names conda-forge, the lock mirrors it to the
local channel, the base image is the debootstrap one. Builds are minutes each (the torch
environment is ~1.5 GB): the torch image is the session's shared demo image
(tests/fixtures/images.py, also gated and opened by other modules); the failure paths share one
small project.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lockdock.testing.demo import demo_environment, mirror_option, write_demo_project
from lockdock.workspace import Workspace
from tests.fixtures.images import DEMO_IMAGE_NAME, DemoImage, clone_project
from tests.helpers import docker, installer_for_image, remove_tags, tags_of
from tests.helpers import lockdock_process as lockdock
from tests.helpers import succeeded as ok

pytestmark = [pytest.mark.engine, pytest.mark.network]

NAME = DEMO_IMAGE_NAME
SMALL_NAME = "lockdock-test/image-e2e-small"


@dataclass
class Built:
    root: Path
    base_image: str
    name: str
    digest: str
    content_tag: str








def inspect(reference: str) -> dict[str, object]:
    proc = docker("image", "inspect", reference)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout)[0])


def _locked_and_fetched(root: Path, channel: str) -> None:
    ok(lockdock(root, "lock", "cpu", *mirror_option(channel)))
    ok(lockdock(root, "fetch", "cpu"))


def _build(built_root: Path, base: str, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return lockdock(built_root, "build", "cpu", "--base-image", base, "--name", name, *extra)


@pytest.fixture(scope="module")
def torch_build(demo_image: DemoImage) -> Built:
    """The shared demo image (built once per session; its project must not be modified)."""
    return Built(demo_image.root, demo_image.base_image, demo_image.name, demo_image.digest,
                 demo_image.reference)


@pytest.fixture(scope="module")
def small_project(
    tmp_path_factory: pytest.TempPathFactory, demo_channel: str, base_image: str
) -> Iterator[Path]:
    root = write_demo_project(tmp_path_factory.mktemp("e2e") / "small", pip=())
    _locked_and_fetched(root, demo_channel)
    yield root
    remove_tags(SMALL_NAME)


# --- the torch image -------------------------------------------------------------------


def test_build_tags_labels_and_digest(torch_build: Built) -> None:
    lock_sha = hashlib.sha256((torch_build.root / "conda-lock.yml").read_bytes())
    assert torch_build.content_tag == f"{NAME}:cpu-{lock_sha.hexdigest()[:12]}"
    assert torch_build.digest.startswith("sha256:")
    attrs = inspect(torch_build.content_tag)
    assert attrs["Id"] == torch_build.digest
    assert set(tags_of(NAME)) == {torch_build.content_tag, f"{NAME}:cpu-py3.11-torch2.13",
                                  f"{NAME}:latest"}
    labels = attrs["Config"]["Labels"]  # type: ignore[index]
    assert labels["io.lockdock.flavor"] == "cpu"
    assert labels["io.lockdock.pytorch.version"] == "2.13.0+cpu"
    assert labels["io.lockdock.python.version"] == "3.11.7"
    assert labels["io.lockdock.cuda.version"] == "none"
    assert labels["org.opencontainers.image.created"] == "2024-01-01T00:00:00Z"


def test_torch_runs_as_the_non_root_user(torch_build: Built) -> None:
    proc = docker("run", "--rm", torch_build.content_tag, "python", "-c",
                  "import os, sys, torch; t = torch.arange(4.0); "
                  "print(os.getuid(), sys.prefix, torch.__version__, float((t * t).sum()))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1000", "/opt/conda/envs/lockdock", "2.13.0+cpu", "14.0"]
    shell = docker("run", "--rm", "-i", torch_build.content_tag)  # default: bash, activated
    assert shell.returncode == 0



def _verify_in_image(image: str, verifier: Path, *before: str) -> subprocess.CompletedProcess[str]:
    command = " && ".join([*before, "python -m lockdock.installer.install"
                           " /usr/share/lockdock/conda-lock.yml --prefix /opt/conda/envs/lockdock"
                           " --platform linux-64 --verify-only"])
    return docker("run", "--rm", "--user", "root", "-v", f"{verifier}:/verify:ro",
                  "-e", "PYTHONPATH=/verify/src:/verify/deps", "-e", "PYTHONDONTWRITEBYTECODE=1",
                  image, "bash", "-c", command)


def test_the_image_ships_the_locks_sbom(torch_build: Built, tmp_path: Path) -> None:
    from lockdock.sbom import sbom_json

    proc = docker("run", "--rm", torch_build.content_tag,
                  "cat", "/usr/share/lockdock/sbom.cdx.json")
    assert proc.returncode == 0, proc.stderr
    shipped = json.loads(proc.stdout)
    created = inspect(torch_build.content_tag)["Config"]["Labels"][  # type: ignore[index]
        "org.opencontainers.image.created"]
    epoch = int(datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
    expected = json.loads(sbom_json(torch_build.root / "conda-lock.yml", "linux-64", name="cpu",
                                    epoch=epoch))
    assert shipped == expected
    purls = {c["purl"] for c in shipped["components"]}
    assert any(p.startswith("pkg:pypi/torch@2.13.0") for p in purls)
    assert any(p.startswith("pkg:conda/python@3.11.7") for p in purls)


def test_environment_verifies_inside_the_image(torch_build: Built, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    verifier = installer_for_image(torch_build.root, tmp_path / "verifier")
    passed = _verify_in_image(torch_build.content_tag, verifier)
    assert passed.returncode == 0, passed.stderr
    assert "matches" in passed.stderr
    # The check can fail: drop one locked pip distribution inside a throwaway container.
    tampered = _verify_in_image(
        torch_build.content_tag, verifier,
        "rm -rf /opt/conda/envs/lockdock/lib/python3.11/site-packages/sympy-*.dist-info",
    )
    assert tampered.returncode == 7 and "sympy" in tampered.stderr


def test_second_build_is_a_no_op(torch_build: Built) -> None:
    proc = ok(_build(torch_build.root, torch_build.base_image, NAME))
    assert "already exists" in proc.stderr and "nothing to build" in proc.stderr
    assert proc.stdout.strip() == torch_build.digest
    assert "buildx" not in proc.stderr and "#1 " not in proc.stderr


def test_non_environment_change_reuses_the_environment_layer(
    torch_build: Built, tmp_path: Path
) -> None:
    """A clone of the shared project (its Dockerfile changed) under its own name: the shared
    image, its tags and its project's last-build record stay as other modules expect."""
    before = inspect(torch_build.content_tag)["RootFS"]["Layers"]  # type: ignore[index]
    clone = clone_project(torch_build.root, tmp_path / "changed")
    dockerfile = clone / "images/cpu/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + 'RUN echo "welcome" > /home/lockdock/motd\n')
    changed = f"{NAME}-changed"
    try:
        proc = ok(_build(clone, torch_build.base_image, changed, "--force"))
        assert "builder 1/1" in proc.stderr and "CACHED" in proc.stderr
        rebuilt = Workspace(clone).read_build_record("cpu", "linux/amd64")
        assert rebuilt is not None
        after = inspect(rebuilt.reference)["RootFS"]["Layers"]  # type: ignore[index]
    finally:
        remove_tags(changed)
    assert len(after) == len(before) + 1
    # Base, environment slots, lock and SBOM: same digests, although this build rewrote the
    # layers' timestamps (its flavor adds a layer) and the first did not.
    assert after[: len(before)] == before
    assert "rewrites every layer's timestamps" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] != torch_build.digest


def test_verify_repro_reports_identical_digests(torch_build: Built) -> None:
    proc = ok(lockdock(torch_build.root, "verify-repro", "cpu",
                       "--base-image", torch_build.base_image))
    assert "verify-repro cpu: identical" in proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("verify-repro cpu linux"))
    first, second = line.split(": ", 1)[1].split(" / ")
    assert first == second and first.startswith("sha256:")
    # ... and they are the image `lockdock build` made with the builder's caches.
    assert first == torch_build.digest
    assert "the recorded build" in proc.stderr and "is that image" in proc.stderr


# --- failure paths (small project: no torch) ---------------------------------------------


def test_failed_build_leaves_no_content_addressed_tag(small_project: Path, base_image: str) -> None:
    dockerfile = small_project / "images/cpu/Dockerfile"
    original = dockerfile.read_text()
    dockerfile.write_text(original + "RUN echo 'failing on purpose' >&2 && exit 3\n")
    try:
        proc = _build(small_project, base_image, SMALL_NAME)
    finally:
        dockerfile.write_text(original)
    assert proc.returncode == 10, proc.stderr[-2000:]
    assert "failing on purpose" in proc.stderr
    assert tags_of(SMALL_NAME) == []  # neither the content-addressed nor a temporary tag
    assert not Workspace(small_project).build_record_path("cpu", "linux/amd64").exists()


def test_verify_repro_names_a_file_written_with_the_time(
    small_project: Path, base_image: str
) -> None:
    dockerfile = small_project / "images/cpu/Dockerfile"
    original = dockerfile.read_text()
    dockerfile.write_text(original + "RUN date +%s%N > /home/lockdock/built-at\n")
    try:
        proc = lockdock(small_project, "verify-repro", "cpu", "--base-image", base_image)
    finally:
        dockerfile.write_text(original)
    assert proc.returncode == 12, proc.stderr[-3000:]
    assert "home/lockdock/built-at:" in proc.stderr
    assert "differ" in proc.stderr


# --- CUDA flavor (opt-in: --run-cuda-image; several GB of NVIDIA wheels from PyPI) ---------


@pytest.mark.cuda_image
def test_cuda_image_carries_a_cuda_torch(
    tmp_path_factory: pytest.TempPathFactory, demo_channel: str, base_image: str
) -> None:
    root = write_demo_project(tmp_path_factory.mktemp("e2e") / "cuda", flavors=("cuda",),
                              pip=("torch==2.13.0",))
    env = {k: v for k, v in demo_environment().items() if k != "UV_FIND_LINKS"}  # PyPI's torch
    for args in (("lock", "cuda", *mirror_option(demo_channel)), ("fetch", "cuda")):
        ok(subprocess.run([sys.executable, "-m", "lockdock.cli", "-C", str(root), *args],
                          capture_output=True, text=True, env=env, check=False))
    name = "lockdock-test/image-e2e-cuda"
    try:
        proc = ok(lockdock(root, "build", "cuda", "--base-image", base_image, "--name", name))
        built = Workspace(root).read_build_record("cuda", "linux/amd64")
        assert built is not None
        reference = built.reference
        attrs = inspect(reference)
        labels = attrs["Config"]["Labels"]  # type: ignore[index]
        assert labels["io.lockdock.cuda.version"] != "none"
        assert labels["io.lockdock.cuda.min-driver"]
        env_vars = attrs["Config"]["Env"]  # type: ignore[index]
        assert "CUBLAS_WORKSPACE_CONFIG=:4096:8" in env_vars
        assert "NVIDIA_VISIBLE_DEVICES=all" in env_vars
        probe = docker("run", "--rm", reference, "python", "-c",
                       "import torch; print(torch.version.cuda, torch.backends.cudnn.version())")
        assert probe.returncode == 0, probe.stderr
        cuda_version, cudnn = probe.stdout.split()
        assert cuda_version == labels["io.lockdock.cuda.version"] and cudnn != "None"
        print(f"cuda image {reference}: {attrs['Size']} bytes; build log tail: "
              f"{proc.stderr.splitlines()[-1]}")
    finally:
        remove_tags(name)
