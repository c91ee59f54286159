"""Every tag lockdock writes comes from lockdock.tags; build and publish agree on each lock.

The table covers the lock shapes whose tags once drifted apart between build and publish:
conda pytorch cpu and cuda builds, pip ``torch==x+cpu``, ``+cu128``, CUDA 13 runtime wheels,
a ROCm wheel, and no torch at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lockdock.accelerators import KINDS
from lockdock.context import context_of
from lockdock.facts import descriptor, lock_versions, version_labels
from lockdock.image.plan import planned_tags
from lockdock.installer.lockfile import Lock, LockedArtifact
from lockdock.platform import Platform
from lockdock.publish_plan import LocalImage, plan_publish
from lockdock.registry import parse_reference
from lockdock.spec import Project
from lockdock.tags import arch_tag, content_tag, local_tags, publish_tags
from lockdock.testing.flavors import write_flavor
from tests.helpers import entry

AMD64, ARM64 = Platform.parse("linux-64"), Platform.parse("linux-aarch64")
SHA = "ba977836d47e47c2" + "0" * 48

TABLE = [
    ("conda cpu build", "cpu",
     [entry("python", "3.12.7"), entry("pytorch", "2.5.1", build="cpu_mkl_py312h0_100")],
     "py3.12-torch2.5"),
    ("conda cuda build", "cuda",
     [entry("python", "3.12.7"), entry("pytorch", "2.5.1", build="cuda126_py312h0_300"),
      entry("cuda-version", "12.6")],
     "py3.12-torch2.5-cu12.6"),
    ("pip +cpu with stray CUDA wheels", "cpu",
     [entry("python", "3.11.7"), entry("torch", "2.13.0+cpu", "pip"),
      entry("nvidia-cuda-runtime-cu12", "12.8.90", "pip")],
     "py3.11-torch2.13"),
    ("pip +cu128", "cuda",
     [entry("python", "3.11.7"), entry("torch", "2.8.0+cu128", "pip")],
     "py3.11-torch2.8-cu12.8"),
    ("pip CUDA 13 runtime wheels", "cuda",
     [entry("python", "3.11.7"), entry("torch", "2.13.0", "pip"),
      entry("nvidia-cuda-runtime", "13.0.96", "pip")],
     "py3.11-torch2.13-cu13.0"),
    ("pip ROCm wheel", "rocm",
     [entry("python", "3.11.7"), entry("torch", "2.5.1+rocm6.2", "pip")],
     "py3.11-torch2.5-rocm6.2"),
    ("no torch", "cpu", [entry("python", "3.12.0")], "py3.12"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "kind", "artifacts", "described"), TABLE,
                         ids=[row[0] for row in TABLE])
def test_build_and_publish_tag_every_lock_alike(
    case: str, kind: str, artifacts: list[LockedArtifact], described: str, tmp_path: Path
) -> None:
    versions = lock_versions(artifacts)
    assert descriptor(versions, KINDS[kind]) == described
    built = local_tags(kind, SHA, described, AMD64, AMD64)
    published = publish_tags(kind, SHA, described, "20260102", (kind,))
    assert built.content_addressed == published.content_addressed == content_tag(kind, SHA)
    assert built.descriptive == (f"{kind}-{described}",)
    assert published.descriptive == (f"{kind}-{described}-20260102",)
    # ...and the real planners of both commands, from one lock, agree with that
    from lockdock.spec import load_project

    (tmp_path / "environment.yml").write_text("dependencies: []\n")
    write_flavor(tmp_path / "images", kind, f'accelerator = "{kind}"\n')
    project: Project = load_project(tmp_path)
    lock = Lock(path=tmp_path / "conda-lock.yml", content_hash={}, platforms=("linux-64",),
                channels=(), sources=(), artifacts=tuple(artifacts))
    context = context_of(project, project.flavors[kind], lock, SHA, AMD64)
    assert planned_tags(context, AMD64) == built
    digest = "sha256:" + "d" * 64
    image = LocalImage(platform="linux/amd64", reference="x", digest=digest,
                       created="2026-01-02T00:00:00Z", labels={})
    report = {"passed": True, "image_digest": digest, "flavor": kind, "platform": "linux/amd64"}
    publication = plan_publish(
        flavor=kind, accelerator=context.accelerator, moving_tags=(kind,),
        repository=parse_reference("127.0.0.1:5000/team/ml"), lock=lock, lock_hash=SHA,
        images=[image], reports={"linux/amd64": (tmp_path / "gate.json", report)},
        recorded_date=None, env_epoch=None, today="20991231",
    )  # fmt: skip
    assert publication.tags == published


def test_local_tags_of_another_platform_carry_the_arch() -> None:
    tags = local_tags("cuda", "f" * 64, "py3.12-torch2.8-cu12.8", ARM64, AMD64)
    assert tags.in_order == ("cuda-ffffffffffff-arm64", "cuda-py3.12-torch2.8-cu12.8-arm64",
                             "latest-arm64")
    assert tags.named("lockdock/cuda")[0] == "lockdock/cuda:cuda-ffffffffffff-arm64"
    assert arch_tag("cpu-0123456789ab", AMD64) == "cpu-0123456789ab-amd64"


def test_moving_tags_come_from_the_flavor_data() -> None:
    assert publish_tags("cpu", SHA, "py3.12", "20260102", ("cpu", "latest")).in_order == (
        "cpu-ba977836d47e", "cpu-py3.12-20260102", "cpu", "latest")
    assert publish_tags("gpu", SHA, "", "20260102", ("gpu", "stable")).moving == ("gpu", "stable")


def test_version_labels_name_every_runtime_and_the_cuda_driver() -> None:
    labels = version_labels(lock_versions(TABLE[3][2]))
    assert labels["io.lockdock.cuda.version"] == "12.8"
    assert labels["io.lockdock.cuda.min-driver"] == "570.26"
    assert labels["io.lockdock.rocm.version"] == "none"
    cpu = version_labels(lock_versions(TABLE[2][2]))
    assert cpu["io.lockdock.cuda.version"] == "none" and "io.lockdock.cuda.min-driver" not in cpu
