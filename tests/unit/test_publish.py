"""publish planning (pure) and push ordering with a recording pusher; the real registry runs
are in tests/engine/test_publish_engine.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lockdock import publish
from lockdock.errors import PublishRefusedError, RegistryError, UsageError
from lockdock.installer.lockfile import LockedArtifact, read_lock
from lockdock.registry import ImageRef, parse_reference

REALDATA = Path("/work/shared/realdata")
LARSNET = REALDATA / "larsnet-midi" / "conda-lock.yml"
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def _artifact(name: str, version: str, manager: str = "conda", build: str = "h0_0") \
        -> LockedArtifact:
    url = (f"https://conda.anaconda.org/conda-forge/linux-64/{name}-{version}-{build}.conda"
           if manager == "conda" else f"https://files.example/{name}-{version}-py3-none-any.whl")
    return LockedArtifact(name=name, version=version, manager=manager, platform="linux-64",
                          url=url, sha256=None, md5=None, categories=frozenset({"main"}))


def test_tags_in_push_order() -> None:
    plan = publish.plan_tags("cpu", "0123456789abcdef" * 4, "py3.12-torch2.5", "20250102")
    assert plan.in_order == ("cpu-0123456789ab", "cpu-py3.12-torch2.5-20250102", "cpu", "latest")
    cuda = publish.plan_tags("cuda", "f" * 64, "py3.12-torch2.5-cu12.6", "20250102")
    assert cuda.in_order == ("cuda-ffffffffffff", "cuda-py3.12-torch2.5-cu12.6-20250102", "cuda")


def test_descriptor_reads_python_torch_and_the_cuda_torch_was_built_for() -> None:
    conda_cuda = [_artifact("python", "3.12.7"), _artifact("pytorch", "2.5.1", build="cuda126_x"),
                  _artifact("cuda-version", "12.6")]
    assert publish.lock_descriptor(conda_cuda) == "py3.12-torch2.5-cu12.6"
    pip_cuda = [_artifact("python", "3.11.9"), _artifact("torch", "2.13.0", "pip"),
                _artifact("nvidia-cuda-runtime-cu12", "12.8.90", "pip")]
    assert publish.lock_descriptor(pip_cuda) == "py3.11-torch2.13-cu12.8"
    pip_cpu = [_artifact("python", "3.11.9"), _artifact("torch", "2.13.0+cpu", "pip")]
    assert publish.lock_descriptor(pip_cpu) == "py3.11-torch2.13"
    assert publish.lock_descriptor([_artifact("python", "3.12.0")]) == "py3.12"


@pytest.mark.skipif(not LARSNET.exists(), reason="realdata missing")
def test_descriptor_of_a_real_lock_with_cpu_torch_and_stray_cuda_libs() -> None:
    # larsnet locks CPU pytorch 2.7.1 next to cuda-version 12.9 pulled in by another package
    lock = read_lock(LARSNET)
    assert publish.lock_descriptor(lock.select("linux-64")) == "py3.11-torch2.7"


IMAGE = publish.LocalImage(platform="linux/amd64", reference="x", digest=DIGEST)


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
    refusal = publish.gate_refusal(report, Path("gate.json"), "cpu", IMAGE)
    assert refusal is not None and reason in refusal


def test_passing_gate_for_this_digest_is_accepted() -> None:
    report = {"image_digest": DIGEST, "passed": True, "flavor": "cpu", "platform": "linux/amd64"}
    assert publish.gate_refusal(report, Path("gate.json"), "cpu", IMAGE) is None


def test_publish_date_prefers_the_image_then_epoch_then_record_then_today() -> None:
    assert publish.publish_date(["2025-03-04T05:06:07Z"], "0", "20200101", "20990101") \
        == "20250304"
    # an epoch-0 build date is not a date: fall through
    assert publish.publish_date(["1970-01-01T00:00:00Z"], "1700000000", None, "x") == "20231114"
    assert publish.publish_date([None], None, "20200101", "20990101") == "20200101"
    assert publish.publish_date([None], None, None, "20990101") == "20990101"
    with pytest.raises(UsageError):
        publish.publish_date([None], "soon", None, "x")


def test_images_lock_is_sorted_and_replaces_by_flavor_and_repository() -> None:
    a = {"flavor": "cuda", "repository": "r1", "digest": DIGEST}
    b = {"flavor": "cpu", "repository": "r1", "digest": DIGEST}
    c = {"flavor": "cpu", "repository": "r1", "digest": OTHER}
    data = publish.updated_images_lock(publish.updated_images_lock(None, a), b)
    assert [r["flavor"] for r in data["images"]] == ["cpu", "cuda"]
    data = publish.updated_images_lock(data, c)
    assert [r["digest"] for r in data["images"]] == [OTHER, DIGEST]
    text = publish.render_images_lock(data)
    assert text == publish.render_images_lock(json.loads(text))


def _plan(tmp_path: Path, images: list[publish.LocalImage]) -> publish.PublishPlan:
    lock_path = tmp_path / "conda-lock.yml"
    lock_path.write_text(
        "version: 1\nmetadata: {platforms: [linux-64, linux-aarch64], channels: []}\n"
        "package:\n"
        + "".join(
            f"- {{name: python, version: 3.12.1, manager: conda, platform: {p}, "
            f"url: 'https://conda.anaconda.org/conda-forge/{p}/python-3.12.1-h0_0.conda', "
            f"hash: {{sha256: '{'c' * 64}'}}, category: main}}\n"
            for p in ("linux-64", "linux-aarch64")
        ),
        encoding="utf-8",
    )
    reports = {
        i.platform: (tmp_path / i.platform.replace("/", "-") / "gate.json",
                     {"image_digest": i.digest, "passed": True})
        for i in images
    }
    return publish.plan_publish(
        flavor="cpu", repository=parse_reference("127.0.0.1:5000/t/ml"),
        lock=read_lock(lock_path), lock_hash="d" * 64, images=images, reports=reports,
        recorded_date=None, env_epoch=None, today="20250101",
    )


class RecordingPusher:
    """Records pushes; fails the push of ``fail_tag`` with ``message``."""

    def __init__(self, fail_tag: str | None = None, message: str = "") -> None:
        self.pushed: list[str] = []
        self.fail_tag = fail_tag
        self.message = message

    def push(self, image: publish.LocalImage, repository: str, tag: str) -> str:
        if tag == self.fail_tag:
            raise RegistryError(self.message)
        self.pushed.append(tag)
        return image.digest

    def create_index(self, repository: str, tag: str, sources: list[str]) -> None:
        self.pushed.append(f"index:{tag}:{','.join(s.split('@')[1][:12] for s in sources)}")


def test_plan_refuses_every_image_without_a_passing_gate(tmp_path: Path) -> None:
    image = publish.LocalImage(platform="linux/amd64", reference="x", digest=DIGEST)
    with pytest.raises(PublishRefusedError, match="no gate report"):
        publish.plan_publish(
            flavor="cpu", repository=parse_reference("r.io/t/ml"), lock=read_lock(
                _plan(tmp_path, [image]).lock_path), lock_hash="d" * 64, images=[image],
            reports={"linux/amd64": (tmp_path / "gate.json", None)}, recorded_date=None,
            env_epoch=None, today="20250101",
        )


def test_plan_refuses_an_image_built_from_another_lock(tmp_path: Path) -> None:
    stale = publish.LocalImage(platform="linux/amd64", reference="x", digest=DIGEST,
                               labels={publish.LOCK_SHA256_LABEL: "e" * 64})
    with pytest.raises(PublishRefusedError, match="built from a lock with SHA-256 eeeeeeeeeeee"):
        _plan(tmp_path, [stale])
    same = publish.LocalImage(platform="linux/amd64", reference="x", digest=DIGEST,
                              labels={publish.LOCK_SHA256_LABEL: "d" * 64})
    assert _plan(tmp_path, [same]).images == (same,)


def test_a_failed_push_stops_before_the_moving_tags(tmp_path: Path) -> None:
    plan = _plan(tmp_path, [IMAGE])
    assert plan.tags.in_order == ("cpu-dddddddddddd", "cpu-py3.12-20250101", "cpu", "latest")
    pusher = RecordingPusher(fail_tag="cpu-py3.12-20250101", message="503 Service Unavailable")
    with pytest.raises(RegistryError):
        publish.execute(plan, pusher, resolve=lambda ref: DIGEST, report=lambda _: None)
    assert pusher.pushed == ["cpu-dddddddddddd"]


def test_execute_reads_every_tag_back(tmp_path: Path) -> None:
    plan = _plan(tmp_path, [IMAGE])
    pusher = RecordingPusher()

    def registry(ref: ImageRef) -> str:  # the registry says `latest` is something else
        return OTHER if ref.tag == "latest" else DIGEST

    with pytest.raises(RegistryError, match="latest is sha256:bbbb"):
        publish.execute(plan, pusher, resolve=registry, report=lambda _: None)
    digest, per_platform = publish.execute(plan, pusher, resolve=lambda ref: DIGEST,
                                           report=lambda _: None)
    assert digest == DIGEST and per_platform == {"linux/amd64": DIGEST}


def test_two_platforms_push_per_arch_tags_then_an_index_per_tag(tmp_path: Path) -> None:
    arm = publish.LocalImage(platform="linux/arm64", reference="y", digest=OTHER)
    plan = _plan(tmp_path, [arm, IMAGE])
    pusher = RecordingPusher()
    index = "sha256:" + "e" * 64
    digest, _ = publish.execute(plan, pusher, resolve=lambda ref: index, report=lambda _: None)
    assert digest == index
    sources = "sha256:aaaaa,sha256:bbbbb"
    assert pusher.pushed == [
        "cpu-dddddddddddd-amd64", "cpu-dddddddddddd-arm64",
        f"index:cpu-dddddddddddd:{sources}", f"index:cpu-py3.12-20250101:{sources}",
        f"index:cpu:{sources}", f"index:latest:{sources}",
    ]


def test_retries_transient_errors_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish.time, "sleep", lambda _: None)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RegistryError("Pushing x failed: 503 Service Unavailable")
        return DIGEST

    assert publish._with_retries(flaky, "push", attempts=4, backoff=0.01) == DIGEST
    assert len(calls) == 3
    calls.clear()

    def denied() -> str:
        calls.append(1)
        raise RegistryError("Pushing x failed: denied: requested access to the resource")

    with pytest.raises(RegistryError, match="denied"):
        publish._with_retries(denied, "push", attempts=4, backoff=0.01)
    assert len(calls) == 1
    calls.clear()

    def down() -> str:
        calls.append(1)
        raise RegistryError("Pushing x failed: connection refused")

    with pytest.raises(RegistryError, match="connection refused"):
        publish._with_retries(down, "push", attempts=3, backoff=0.01)
    assert len(calls) == 3


def test_default_images_are_the_builds_of_this_lock(tmp_path: Path) -> None:
    from lockdock.image import build_record_path

    def record(platform: str, lock_sha: str, reference: str) -> None:
        path = build_record_path(tmp_path, "cpu", platform)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"reference": reference, "lock_sha256": lock_sha}))

    record("linux/amd64", "a" * 64, "lockdock/cpu:cpu-aaaaaaaaaaaa")
    record("linux/arm64", "a" * 64, "lockdock/cpu:cpu-aaaaaaaaaaaa-arm64")
    assert publish.default_image_refs(tmp_path, "cpu", "a" * 64) == [
        "lockdock/cpu:cpu-aaaaaaaaaaaa", "lockdock/cpu:cpu-aaaaaaaaaaaa-arm64"]
    # the arm64 image was rebuilt from another lock: not this lock's
    record("linux/arm64", "b" * 64, "lockdock/cpu:cpu-bbbbbbbbbbbb-arm64")
    assert publish.default_image_refs(tmp_path, "cpu", "a" * 64) == [
        "lockdock/cpu:cpu-aaaaaaaaaaaa"]
