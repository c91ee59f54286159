"""publish_plan: tags from the flavor's data, the descriptor, gate refusals, the publish date
and the plan, all pure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lockdock import publish_plan
from lockdock.accelerators import accelerator
from lockdock.errors import PublishRefusedError, UsageError
from lockdock.facts import LOCK_SHA256_LABEL, descriptor, lock_versions
from lockdock.installer.lockfile import LockedArtifact, read_lock
from lockdock.registry import parse_reference
from tests.data import LARSNET

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def _artifact(name: str, version: str, manager: str = "conda", build: str = "h0_0") \
        -> LockedArtifact:
    url = (f"https://conda.anaconda.org/conda-forge/linux-64/{name}-{version}-{build}.conda"
           if manager == "conda" else f"https://files.example/{name}-{version}-py3-none-any.whl")
    return LockedArtifact(name=name, version=version, manager=manager, platform="linux-64",
                          url=url, sha256=None, md5=None, categories=frozenset({"main"}))


def test_tags_in_push_order_with_the_flavors_moving_tags(tmp_path: Path) -> None:
    cpu = plan_for(tmp_path, [IMAGE])
    assert cpu.tags.in_order == ("cpu-dddddddddddd", "cpu-py3.12-20250101", "cpu", "latest")
    # the moving tags are the flavor's data, whatever its name or kind
    cuda = plan_for(tmp_path, [IMAGE], flavor="cuda", kind="cuda", moving=("gpu",),
                    extra=[("pytorch", "2.5.1", "cuda126_x"), ("cuda-version", "12.6", "h0_0")])
    assert cuda.tags.in_order == ("cuda-dddddddddddd", "cuda-py3.12-torch2.5-cu12.6-20250101",
                                  "gpu")
    assert plan_for(tmp_path, [IMAGE], flavor="cpu", moving=()).tags.moving == ()


def _descriptor(artifacts: list[LockedArtifact], kind: str = "cuda") -> str:
    return descriptor(lock_versions(artifacts), accelerator(kind))


def test_descriptor_reads_python_torch_and_the_cuda_torch_was_built_for() -> None:
    conda_cuda = [_artifact("python", "3.12.7"), _artifact("pytorch", "2.5.1", build="cuda126_x"),
                  _artifact("cuda-version", "12.6")]
    assert _descriptor(conda_cuda) == "py3.12-torch2.5-cu12.6"
    pip_cuda = [_artifact("python", "3.11.9"), _artifact("torch", "2.13.0", "pip"),
                _artifact("nvidia-cuda-runtime-cu12", "12.8.90", "pip")]
    assert _descriptor(pip_cuda) == "py3.11-torch2.13-cu12.8"
    pip_cpu = [_artifact("python", "3.11.9"), _artifact("torch", "2.13.0+cpu", "pip")]
    assert _descriptor(pip_cpu, "cpu") == "py3.11-torch2.13"
    assert _descriptor([_artifact("python", "3.12.0")], "cpu") == "py3.12"


def test_descriptor_of_a_real_lock_with_cpu_torch_and_stray_cuda_libs() -> None:
    # larsnet locks CPU pytorch 2.7.1 next to cuda-version 12.9 pulled in by another package
    lock = read_lock(LARSNET)
    assert _descriptor(lock.select("linux-64"), "cpu") == "py3.11-torch2.7"


IMAGE = publish_plan.LocalImage(platform="linux/amd64", reference="x", digest=DIGEST)


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        (None, "no gate report"),
        ({"image_digest": OTHER, "passed": True}, "not for"),
        ({"image_digest": DIGEST, "passed": False}, "gates failed"),
        ({"image_digest": DIGEST, "passed": "yes"}, "gates failed"),
        ({"image_digest": DIGEST, "passed": True, "flavor": "cuda"}, "flavor 'cuda'"),
        ({"image_digest": DIGEST, "passed": True, "platform": "linux/arm64"}, "platform"),
    ],
)
def test_gate_refusals(report: dict[str, Any] | None, reason: str) -> None:
    refusal = publish_plan.gate_refusal(report, Path("gate.json"), "cpu", IMAGE)
    assert refusal is not None and reason in refusal


def test_passing_gate_for_this_digest_is_accepted() -> None:
    report = {"image_digest": DIGEST, "passed": True, "flavor": "cpu", "platform": "linux/amd64"}
    assert publish_plan.gate_refusal(report, Path("gate.json"), "cpu", IMAGE) is None


def test_publish_date_prefers_the_image_then_epoch_then_record_then_today() -> None:
    assert publish_plan.publish_date(["2025-03-04T05:06:07Z"], "0", "20200101", "20990101") \
        == "20250304"
    # an epoch-0 build date is not a date: fall through
    assert publish_plan.publish_date(["1970-01-01T00:00:00Z"], "1700000000", None, "x") \
        == "20231114"
    assert publish_plan.publish_date([None], None, "20200101", "20990101") == "20200101"
    assert publish_plan.publish_date([None], None, None, "20990101") == "20990101"
    with pytest.raises(UsageError):
        publish_plan.publish_date([None], "soon", None, "x")


def plan_for(
    tmp_path: Path, images: list[publish_plan.LocalImage], *, flavor: str = "cpu",
    kind: str = "cpu", moving: tuple[str, ...] = ("cpu", "latest"),
    extra: Sequence[tuple[str, str, str]] = (),
) -> publish_plan.PublishPlan:
    """The plan for ``images`` of a lock with python 3.12.1 (and ``extra`` conda packages:
    name, version, build) on both platforms, each image gated and passed."""
    lock_path = tmp_path / "conda-lock.yml"
    packages = [("python", "3.12.1", "h0_0"), *extra]
    lock_path.write_text(
        "version: 1\nmetadata: {platforms: [linux-64, linux-aarch64], channels: []}\n"
        "package:\n"
        + "".join(
            f"- {{name: {name}, version: '{version}', manager: conda, platform: {p}, "
            f"url: 'https://conda.anaconda.org/conda-forge/{p}/{name}-{version}-{build}.conda', "
            f"hash: {{sha256: '{'c' * 64}'}}, category: main}}\n"
            for p in ("linux-64", "linux-aarch64") for name, version, build in packages
        ),
        encoding="utf-8",
    )
    reports = {
        i.platform: (tmp_path / i.platform.replace("/", "-") / "gate.json",
                     {"image_digest": i.digest, "passed": True})
        for i in images
    }
    return publish_plan.plan_publish(
        flavor=flavor, accelerator=accelerator(kind), moving_tags=moving,
        repository=parse_reference("127.0.0.1:5000/t/ml"),
        lock=read_lock(lock_path), lock_hash="d" * 64, images=images, reports=reports,
        recorded_date=None, env_epoch=None, today="20250101",
    )


def test_plan_refuses_every_image_without_a_passing_gate(tmp_path: Path) -> None:
    image = publish_plan.LocalImage(platform="linux/amd64", reference="x", digest=DIGEST)
    with pytest.raises(PublishRefusedError, match="no gate report"):
        publish_plan.plan_publish(
            flavor="cpu", accelerator=accelerator("cpu"), moving_tags=("cpu",),
            repository=parse_reference("r.io/t/ml"), lock=read_lock(
                plan_for(tmp_path, [image]).lock_path), lock_hash="d" * 64, images=[image],
            reports={"linux/amd64": (tmp_path / "gate.json", None)}, recorded_date=None,
            env_epoch=None, today="20250101",
        )


def test_plan_refuses_an_image_built_from_another_lock(tmp_path: Path) -> None:
    stale = publish_plan.LocalImage(platform="linux/amd64", reference="x", digest=DIGEST,
                                    labels={LOCK_SHA256_LABEL: "e" * 64})
    with pytest.raises(PublishRefusedError, match="built from a lock with SHA-256 eeeeeeeeeeee"):
        plan_for(tmp_path, [stale])
    same = publish_plan.LocalImage(platform="linux/amd64", reference="x", digest=DIGEST,
                                   labels={LOCK_SHA256_LABEL: "d" * 64})
    assert plan_for(tmp_path, [same]).images == (same,)
