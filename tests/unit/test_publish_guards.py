"""Guards of ``lockdock publish`` that only a registry run used to reach, without an engine.

A fake registry (the Registry HTTP API's ``HEAD /v2/<name>/manifests/<tag>``) on 127.0.0.1
answers the real ``RegistryClient``; a fake pusher stands in for the Docker engine and writes
the tags it pushes into that registry. Each test is the one that fails when its guard is
removed: the read-back of every tag after pushing (single platform, ``--platform-only`` and
multi-platform), and ``images.lock.json`` written only after every push succeeded.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockdock import publish
from lockdock.errors import RegistryError
from lockdock.installer.lockfile import read_lock
from lockdock.publish_plan import LocalImage
from lockdock.registry import RegistryClient
from lockdock.spec import load_project
from lockdock.testing.flavors import write_flavor
from lockdock.workspace import IMAGES_LOCK, Workspace

DIGEST = "sha256:" + "a" * 64
ARM_DIGEST = "sha256:" + "b" * 64
ELSEWHERE = "sha256:" + "f" * 64
REPOSITORY = "t/ml"
AMD64 = LocalImage(platform="linux/amd64", reference="local/ml:amd64", digest=DIGEST)
ARM64 = LocalImage(platform="linux/arm64", reference="local/ml:arm64", digest=ARM_DIGEST)


class FakeRegistry:
    """Tags -> digests, served over loopback HTTP; ``lie`` overrides what a tag reads back as."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.lie: dict[str, str] = {}
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                prefix = f"/v2/{REPOSITORY}/manifests/"
                tag = self.path.removeprefix(prefix) if self.path.startswith(prefix) else None
                digest = registry.lie.get(tag or "") or registry.tags.get(tag or "")
                self.send_response(200 if digest else 404)
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeRegistry:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakePusher:
    """The engine's side: pushes write the tag into the fake registry; ``fail_tag`` fails."""

    def __init__(
        self, registry: FakeRegistry, images: list[LocalImage], fail_tag: str | None = None
    ) -> None:
        self.registry = registry
        self.images = {i.reference: i for i in images}
        self.fail_tag = fail_tag
        self.pushed: list[str] = []

    def inspect(self, reference: str) -> LocalImage:
        return self.images[reference]

    def push(self, image: LocalImage, repository: str, tag: str) -> str:
        if tag == self.fail_tag:
            raise RegistryError(f"Pushing {repository}:{tag} failed: denied")
        self.registry.tags[tag] = image.digest
        self.pushed.append(tag)
        return image.digest

    def create_index(self, repository: str, tag: str, sources: list[str]) -> None:
        index = "sha256:" + hashlib.sha256(" ".join(sources).encode()).hexdigest()
        self.registry.tags[tag] = index
        self.pushed.append(f"index:{tag}")


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    with FakeRegistry() as fake:
        yield fake


def _project(root: Path, images: list[LocalImage]) -> Path:
    """A lock for linux-64 + linux-aarch64 and a passing gate report for each image."""
    lock = root / "conda-lock.yml"
    lock.write_text(
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
    for image in images:
        report = Workspace(root).gate_path("cpu", image.digest)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            json.dumps(
                {
                    "image_digest": image.digest,
                    "flavor": "cpu",
                    "platform": image.platform,
                    "passed": True,
                }
            )
        )
    return lock


def _publish(
    root: Path, registry: FakeRegistry, pusher: FakePusher, mode: str = "all"
) -> dict[str, Any]:
    (root / "environment.yml").write_text("dependencies: [python]\n", encoding="utf-8")
    write_flavor(root / "images", "cpu")  # publish takes the moving tags from flavor.toml
    return publish.publish(
        root,
        load_project(root).select(["cpu"])[0],
        read_lock(root / "conda-lock.yml"),
        f"{registry.address}/{REPOSITORY}",
        list(pusher.images),
        mode=mode,
        pusher=pusher,
        registry=RegistryClient(retries=0),
        report=lambda _: None,
        today="20250101",
    )


def test_a_clean_publish_reads_every_tag_back_and_records_it(
    tmp_path: Path, registry: FakeRegistry
) -> None:
    """The control: with an honest registry the same run succeeds and writes the record."""
    _project(tmp_path, [AMD64])
    record = _publish(tmp_path, registry, FakePusher(registry, [AMD64]))
    assert record["digest"] == DIGEST
    written = json.loads((tmp_path / IMAGES_LOCK).read_text())
    assert [r["digest"] for r in written["images"]] == [DIGEST]


def test_a_failed_push_writes_no_images_lock(tmp_path: Path, registry: FakeRegistry) -> None:
    _project(tmp_path, [AMD64])
    earlier = '{"version": 1, "images": []}\n'
    (tmp_path / IMAGES_LOCK).write_text(earlier)
    pusher = FakePusher(registry, [AMD64], fail_tag="latest")
    with pytest.raises(RegistryError, match="latest failed"):
        _publish(tmp_path, registry, pusher)
    assert "latest" not in pusher.pushed and pusher.pushed  # it did push the tags before
    assert (tmp_path / IMAGES_LOCK).read_text() == earlier


def test_a_tag_that_reads_back_as_another_digest_is_refused_and_not_recorded(
    tmp_path: Path, registry: FakeRegistry
) -> None:
    _project(tmp_path, [AMD64])
    registry.lie["cpu"] = ELSEWHERE  # the moving tag ended up somewhere else
    with pytest.raises(RegistryError, match=f"cpu is {ELSEWHERE}"):
        _publish(tmp_path, registry, FakePusher(registry, [AMD64]))
    assert not (tmp_path / IMAGES_LOCK).exists()


def test_platform_only_reads_its_arch_tag_back(tmp_path: Path, registry: FakeRegistry) -> None:
    _project(tmp_path, [AMD64])
    pusher = FakePusher(registry, [AMD64])
    honest = _publish(tmp_path, registry, pusher, mode="platform")
    assert honest == {"platforms": {"linux/amd64": DIGEST}}
    (arch_tag,) = pusher.pushed
    registry.lie[arch_tag] = ELSEWHERE
    with pytest.raises(RegistryError, match=f"{arch_tag} is {ELSEWHERE}"):
        _publish(tmp_path, registry, FakePusher(registry, [AMD64]), mode="platform")
    assert not (tmp_path / IMAGES_LOCK).exists()


def test_multi_platform_index_tags_are_read_back(tmp_path: Path, registry: FakeRegistry) -> None:
    _project(tmp_path, [AMD64, ARM64])
    record = _publish(tmp_path, registry, FakePusher(registry, [AMD64, ARM64]))
    assert record["digest"] == registry.tags["latest"]
    (tmp_path / IMAGES_LOCK).unlink()
    registry.lie["latest"] = ELSEWHERE
    with pytest.raises(RegistryError, match=f"latest is {ELSEWHERE}"):
        _publish(tmp_path, registry, FakePusher(registry, [AMD64, ARM64]))
    assert not (tmp_path / IMAGES_LOCK).exists()


@pytest.mark.parametrize(
    ("registry_host", "url"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("localhost:5000", "http://localhost:5000"),
        ("[::1]", "http://[::1]"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("ghcr.io", "https://ghcr.io"),
        ("10.0.0.7:5000", "https://10.0.0.7:5000"),
        ("registry.example:5000", "https://registry.example:5000"),
        ("docker.io", "https://registry-1.docker.io"),
    ],
)
def test_plain_http_only_for_loopback_registries(registry_host: str, url: str) -> None:
    assert RegistryClient.base_url(registry_host) == url
