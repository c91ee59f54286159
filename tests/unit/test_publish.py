"""publish's edges with a recording pusher: push order, read-back, retries, default images;
the real registry runs are in tests/engine/test_publish_engine.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lockdock import publish
from lockdock.errors import RegistryError, SpecError
from lockdock.registry import ImageRef
from lockdock.workspace import BuildRecord, Workspace
from tests.unit.test_publish_plan import DIGEST, IMAGE, OTHER, plan_for


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


def test_a_failed_push_stops_before_the_moving_tags(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, [IMAGE])
    assert plan.tags.in_order == ("cpu-dddddddddddd", "cpu-py3.12-20250101", "cpu", "latest")
    pusher = RecordingPusher(fail_tag="cpu-py3.12-20250101", message="503 Service Unavailable")
    with pytest.raises(RegistryError):
        publish.execute(plan, pusher, resolve=lambda ref: DIGEST, report=lambda _: None)
    assert pusher.pushed == ["cpu-dddddddddddd"]


def test_execute_reads_every_tag_back(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, [IMAGE])
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
    plan = plan_for(tmp_path, [arm, IMAGE])
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
    def record(platform: str, lock_sha: str, reference: str) -> None:
        Workspace(tmp_path).write_build_record(BuildRecord(
            flavor="cpu", platform=platform, reference=reference, digest=DIGEST,
            tags=(reference,), lock="conda-lock.yml", lock_sha256=lock_sha,
            source_date_epoch=0))

    record("linux/amd64", "a" * 64, "lockdock/cpu:cpu-aaaaaaaaaaaa")
    record("linux/arm64", "a" * 64, "lockdock/cpu:cpu-aaaaaaaaaaaa-arm64")
    assert publish.default_image_refs(tmp_path, "cpu", "a" * 64) == [
        "lockdock/cpu:cpu-aaaaaaaaaaaa", "lockdock/cpu:cpu-aaaaaaaaaaaa-arm64"]
    # the arm64 image was rebuilt from another lock: not this lock's
    record("linux/arm64", "b" * 64, "lockdock/cpu:cpu-bbbbbbbbbbbb-arm64")
    assert publish.default_image_refs(tmp_path, "cpu", "a" * 64) == [
        "lockdock/cpu:cpu-aaaaaaaaaaaa"]
    # a record that is not a build record is an error naming it, not silently skipped
    broken = Workspace(tmp_path).build_record_path("cpu", "linux/arm64")
    fields = json.loads(broken.read_text())
    del fields["reference"]
    broken.write_text(json.dumps(fields))
    with pytest.raises(SpecError, match=re.escape(f"{broken} is not a valid lockdock build "
                                                  "record: `reference`")):
        publish.default_image_refs(tmp_path, "cpu", "a" * 64)
