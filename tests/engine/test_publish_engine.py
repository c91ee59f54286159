"""publish and pin against the real local registry (Debian's docker-registry, ci/engine start).

The images published here are tiny ones made with `docker import` from a one-file tarball,
and their gate.json files are written by the tests: these tests exercise publish (refusal,
ordering, retries, idempotence, the record) and pin, not the gates. The gates' own tests run
the real payload in real images.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lockdock import cli
from lockdock import sbom as sbom_module
from lockdock.fsutil import sha256_file
from lockdock.registry import RegistryClient, parse_reference
from lockdock.testing.flavors import write_flavor
from lockdock.workspace import IMAGES_LOCK, Workspace
from tests.fixtures.engine import missing
from tests.fixtures.registry_proxy import RegistryProxy

pytestmark = pytest.mark.engine

REGISTRY = "127.0.0.1:5000"
TINY_LOCK = """version: 1
metadata:
  content_hash: {linux-64: x, linux-aarch64: x}
  channels: [{url: conda-forge, used_env_vars: []}]
  platforms: [linux-64, linux-aarch64]
  sources: [environment.yml]
package:
"""


def _tiny_lock_text(marker: str) -> str:
    entries = "".join(
        f"- name: {name}\n  version: '{version}'\n  manager: conda\n  platform: {platform}\n"
        f"  dependencies: {{}}\n"
        f"  url: https://conda.anaconda.org/conda-forge/{platform}/{name}-{version}-h0_0.conda\n"
        f"  hash: {{md5: '{'0' * 32}', sha256: '{marker * 64}'}}\n  category: main\n"
        f"  optional: false\n"
        for platform in ("linux-64", "linux-aarch64")
        for name, version in (("python", "3.12.7"), ("pytorch", "2.5.1"))
    )
    return TINY_LOCK + entries


@pytest.fixture(scope="module")
def docker_client(engine: None) -> Iterator[Any]:
    """The Docker SDK client of the shared ``engine`` fixture (which fails on CI, never skips)
    and the local registry, which that engine's ``ci/engine start`` also starts."""
    import docker

    client = docker.from_env()
    try:
        RegistryClient(retries=0).tag_digest_or_none(parse_reference(f"{REGISTRY}/probe/x:y"))
    except Exception as error:
        missing(f"the registry at {REGISTRY}", f"{error}; as root run `ci/engine start`")
    yield client
    # leave the engine as we found it: drop the local tags these tests made
    for image in client.images.list():
        names = [*image.tags, *(image.attrs.get("RepoDigests") or [])]
        for name in names:
            if name.startswith("lockdock-test/publish:") or "/lockdock-test/" in name:
                with contextlib.suppress(Exception):
                    client.images.remove(name, noprune=False)


def docker_import(content: str, platform: str = "linux/amd64") -> str:
    """A one-file image via `docker import`; returns its id (= manifest digest here)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = content.encode()
        info = tarfile.TarInfo("content.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tag = f"lockdock-test/publish:{uuid.uuid4().hex[:12]}"
    subprocess.run(["docker", "import", "--platform", platform, "-", tag],
                   input=buffer.getvalue(), check=True, capture_output=True)
    return tag


def image_id(reference: str) -> str:
    done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", reference],
                          check=True, capture_output=True, text=True)
    return done.stdout.strip()


def write_gate(root: Path, flavor: str, digest: str, *, passed: bool = True,
               platform: str = "linux/amd64", image_digest: str | None = None) -> Path:
    """Hand-written gate report: what `lockdock test` records, for publish to read."""
    path = Workspace(root).gate_path(flavor, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"image_digest": image_digest or digest, "passed": passed,
                                "flavor": flavor, "platform": platform}), encoding="utf-8")
    return path


def _images_lock(project: Path) -> dict[str, Any]:
    data = Workspace(project).read_images_lock()
    assert data is not None, f"publish wrote no {IMAGES_LOCK}"
    return data


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "environment.yml").write_text("dependencies: [python]\n", encoding="utf-8")
    (tmp_path / "images" / "cpu").mkdir(parents=True)
    write_flavor(tmp_path / "images", "cpu")
    (tmp_path / "conda-lock.yml").write_text(_tiny_lock_text("a"), encoding="utf-8")
    return tmp_path


@pytest.fixture
def repo() -> str:
    return f"{REGISTRY}/lockdock-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKDOCK_PUSH_ATTEMPTS", "2")
    monkeypatch.setenv("LOCKDOCK_PUSH_BACKOFF", "0.1")


@pytest.fixture
def proxy() -> Iterator[RegistryProxy]:
    running = RegistryProxy(REGISTRY).start()
    try:
        yield running
    finally:
        running.stop()


def run(*argv: str) -> int:
    with pytest.raises(SystemExit) as done:
        cli.main(list(argv))
    return int(done.value.code or 0)


def tag_digest(repository: str, tag: str) -> str | None:
    return RegistryClient().tag_digest_or_none(parse_reference(f"{repository}:{tag}"))


def test_publish_then_republish_is_idempotent(docker_client: Any, project: Path, repo: str) -> None:
    image = docker_import(f"publish {uuid.uuid4()}")
    digest = image_id(image)
    gate = write_gate(project, "cpu", digest)
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", image) == 0

    lock_hash = sha256_file(project / "conda-lock.yml")
    record_file = project / IMAGES_LOCK
    (record,) = _images_lock(project)["images"]
    ca_tag = f"cpu-{lock_hash[:12]}"
    assert record["tags"][0] == ca_tag and record["tags"][-2:] == ["cpu", "latest"]
    assert record["tags"][1].startswith("cpu-py3.12-torch2.5-")
    assert record["digest"] == digest and record["lock_hash"] == lock_hash
    assert record["reference"] == f"{repo}:{ca_tag}@{digest}"
    assert record["platforms"]["linux/amd64"]["gate_report"] == str(gate.relative_to(project))
    for tag in record["tags"]:
        assert tag_digest(repo, tag) == digest, tag
    sbom = json.loads((gate.parent / sbom_module.SBOM_FILE).read_text())
    assert {c["name"] for c in sbom["components"]} == {"python", "pytorch"}

    first = record_file.read_bytes()
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", image) == 0
    assert record_file.read_bytes() == first
    for tag in record["tags"]:
        assert tag_digest(repo, tag) == digest, tag


@pytest.mark.parametrize("gate", ["missing", "failed", "other-digest"])
def test_publish_refused_without_a_passing_gate_for_this_digest(
    docker_client: Any, project: Path, repo: str, gate: str, capsys: pytest.CaptureFixture[str]
) -> None:
    image = docker_import(f"refused {uuid.uuid4()}")
    digest = image_id(image)
    if gate == "failed":
        write_gate(project, "cpu", digest, passed=False)
    elif gate == "other-digest":
        write_gate(project, "cpu", digest, image_digest="sha256:" + "9" * 64)
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", image) == 14
    message = capsys.readouterr().err
    assert {"missing": "no gate report", "failed": "gates failed",
            "other-digest": "not for " + digest}[gate] in message
    lock_hash = sha256_file(project / "conda-lock.yml")
    assert tag_digest(repo, f"cpu-{lock_hash[:12]}") is None
    assert tag_digest(repo, "cpu") is None
    assert not (project / IMAGES_LOCK).exists()


def test_push_failing_midway_leaves_moving_tags_until_the_rerun(
    docker_client: Any, project: Path, proxy: RegistryProxy, fast_retries: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = f"{proxy.address}/lockdock-test/{uuid.uuid4().hex[:10]}"
    old = docker_import(f"old {uuid.uuid4()}")
    old_digest = image_id(old)
    write_gate(project, "cpu", old_digest)
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", old) == 0
    record_file = project / IMAGES_LOCK
    old_record = record_file.read_bytes()

    # A relock and a new image; the registry refuses everything after the first blob.
    (project / "conda-lock.yml").write_text(_tiny_lock_text("b"), encoding="utf-8")
    new = docker_import(f"new {uuid.uuid4()}")
    new_digest = image_id(new)
    write_gate(project, "cpu", new_digest)
    proxy.completed_blobs = proxy.admitted_blobs = 0
    proxy.fault = "after-first-blob"
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", new) == 13
    assert "503" in capsys.readouterr().err
    assert proxy.completed_blobs == 1 and proxy.refused  # it did fail midway
    for moving in ("cpu", "latest"):
        assert tag_digest(repo, moving) == old_digest
    new_ca = f"cpu-{sha256_file(project / 'conda-lock.yml')[:12]}"
    assert tag_digest(repo, new_ca) is None
    assert record_file.read_bytes() == old_record

    proxy.fault = None  # fixed
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", new) == 0
    for tag in (new_ca, "cpu", "latest"):
        assert tag_digest(repo, tag) == new_digest
    (record,) = _images_lock(project)["images"]
    assert record["digest"] == new_digest and record["tags"][0] == new_ca


def test_a_transient_refusal_is_retried(docker_client: Any, project: Path, proxy: RegistryProxy,
                                        fast_retries: None) -> None:
    repo = f"{proxy.address}/lockdock-test/{uuid.uuid4().hex[:10]}"
    image = docker_import(f"retry {uuid.uuid4()}")
    write_gate(project, "cpu", image_id(image))
    proxy.fault, proxy.remaining_failures = "fail-n", 1
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", image) == 0
    assert len(proxy.refused) == 1
    assert tag_digest(repo, "latest") == image_id(image)


def test_publish_to_an_unreachable_or_rejecting_registry_writes_nothing(
    docker_client: Any, project: Path, proxy: RegistryProxy, fast_retries: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = docker_import(f"unreachable {uuid.uuid4()}")
    write_gate(project, "cpu", image_id(image))
    proxy.fault = "basic-auth"
    repo = f"{proxy.address}/lockdock-test/x"
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", image) == 13
    assert not (project / IMAGES_LOCK).exists()
    proxy.stop()  # now nothing listens on that port
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", image) == 13
    assert "connection refused" in capsys.readouterr().err.lower()
    assert not (project / IMAGES_LOCK).exists()


def test_two_platforms_make_an_index(docker_client: Any, project: Path, repo: str) -> None:
    content = f"multi {uuid.uuid4()}"
    amd, arm = docker_import(content, "linux/amd64"), docker_import(content, "linux/arm64")
    write_gate(project, "cpu", image_id(amd), platform="linux/amd64")
    write_gate(project, "cpu", image_id(arm), platform="linux/arm64")
    assert run("-C", str(project), "publish", "cpu", "--registry", repo,
               "--image", amd, "--image", arm) == 0
    (record,) = _images_lock(project)["images"]
    body, media_type = RegistryClient().manifest_bytes(parse_reference(f"{repo}:cpu"))
    assert media_type in ("application/vnd.oci.image.index.v1+json",
                          "application/vnd.docker.distribution.manifest.list.v2+json")
    index = json.loads(body)
    assert {(m["platform"]["architecture"], m["digest"]) for m in index["manifests"]} == {
        ("amd64", image_id(amd)), ("arm64", image_id(arm))}
    assert record["digest"] == tag_digest(repo, "latest") == tag_digest(repo, record["tags"][0])
    assert set(record["platforms"]) == {"linux/amd64", "linux/arm64"}


# --- pin against the registry ------------------------------------------------------------


def _published(project: Path, repo: str, content: str) -> str:
    image = docker_import(content)
    digest = image_id(image)
    write_gate(project, "cpu", digest)
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", image) == 0
    return digest


def test_pin_files_then_pull_the_pinned_reference(
    docker_client: Any, project: Path, repo: str
) -> None:
    digest = _published(project, repo, f"pin {uuid.uuid4()}")
    app = project / "app"
    (app / ".devcontainer").mkdir(parents=True)
    (app / "Dockerfile").write_text(f"FROM {repo}:cpu AS env\nRUN true\n", encoding="utf-8")
    (app / ".devcontainer" / "devcontainer.json").write_text(
        f'{{\n  // ours\n  "image": "{repo}:latest",\n}}\n', encoding="utf-8")
    (app / "compose.yaml").write_text(f"services:\n  nb:\n    image: '{repo}:cpu'\n",
                                      encoding="utf-8")
    assert run("-C", str(app), "pin", repo, "--check") == 15
    assert run("-C", str(app), "pin", repo) == 0
    assert (app / "Dockerfile").read_text() == f"FROM {repo}:cpu@{digest} AS env\nRUN true\n"
    assert f'"image": "{repo}:latest@{digest}",' in (
        app / ".devcontainer" / "devcontainer.json").read_text()
    compose = (app / "compose.yaml").read_text()
    assert compose == f"services:\n  nb:\n    image: '{repo}:cpu@{digest}'\n"
    assert run("-C", str(app), "pin", repo, "--check") == 0

    # pull what the file now says, with no local copy to fall back on
    pinned = f"{repo}:cpu@{digest}"
    for reference in subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repo],
        check=True, capture_output=True, text=True,
    ).stdout.split():
        subprocess.run(["docker", "image", "rm", "-f", reference], check=True,
                       capture_output=True)
    subprocess.run(["docker", "pull", pinned], check=True, capture_output=True)
    assert image_id(f"{repo}@{digest}") == digest

    # a new publication moves the tag: --check now reports the file as outdated
    (project / "conda-lock.yml").write_text(_tiny_lock_text("c"), encoding="utf-8")
    _published(project, repo, f"pin again {uuid.uuid4()}")
    assert run("-C", str(app), "pin", repo, "--check") == 15


def test_pin_names_an_unknown_tag(docker_client: Any, project: Path, repo: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    _published(project, repo, f"unknown {uuid.uuid4()}")
    dockerfile = project / "Dockerfile.app"
    dockerfile.write_text(f"FROM {repo}:no-such-tag\n", encoding="utf-8")
    assert run("-C", str(project), "pin", repo, "--file", str(dockerfile)) == 13
    assert "'no-such-tag'" in capsys.readouterr().err
    assert dockerfile.read_text() == f"FROM {repo}:no-such-tag\n"


@pytest.mark.parametrize("fault", ["basic-auth", "bearer-denied", "unreachable"])
def test_pin_with_a_rejecting_or_unreachable_registry_writes_nothing(
    docker_client: Any, tmp_path: Path, proxy: RegistryProxy, fault: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = f"{proxy.address}/lockdock-test/auth"
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {repo}:cpu\n", encoding="utf-8")
    if fault == "unreachable":
        proxy.stop()
    else:
        proxy.fault = fault
    assert run("pin", repo, "--file", str(dockerfile)) == 13
    expected = {"basic-auth": "asks for a login", "bearer-denied": "refused a token",
                "unreachable": "could not be reached"}[fault]
    assert expected in capsys.readouterr().err
    assert dockerfile.read_text() == f"FROM {repo}:cpu\n"


def test_published_devcontainer_runs_the_pinned_image(docker_client: Any, project: Path,
                                                      repo: str) -> None:
    digest = _published(project, repo, f"devcontainer {uuid.uuid4()}")
    assert run("-C", str(project), "devcontainer", "cpu") == 0
    config = json.loads((project / ".devcontainer" / "devcontainer.json").read_text())
    assert config["image"].endswith(f"@{digest}")
    assert subprocess.run(["docker", "pull", config["image"]], capture_output=True).returncode == 0



def test_one_runner_per_platform_then_merge(docker_client: Any, project: Path, repo: str) -> None:
    """The CI split: each platform's runner pushes `<content tag>-<arch>`; a last job merges."""
    content = f"split {uuid.uuid4()}"
    amd, arm = docker_import(content, "linux/amd64"), docker_import(content, "linux/arm64")
    for image, platform in ((amd, "linux/amd64"), (arm, "linux/arm64")):
        write_gate(project, "cpu", image_id(image), platform=platform)
        assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", image,
                   "--platform-only") == 0
    ca_tag = f"cpu-{sha256_file(project / 'conda-lock.yml')[:12]}"
    assert tag_digest(repo, f"{ca_tag}-amd64") == image_id(amd)
    assert tag_digest(repo, f"{ca_tag}-arm64") == image_id(arm)
    assert tag_digest(repo, ca_tag) is None and tag_digest(repo, "cpu") is None
    assert not (project / IMAGES_LOCK).exists()

    # the merge job has the gate reports (CI artifacts), not the images
    for image in (amd, arm):
        subprocess.run(["docker", "image", "rm", "-f", image], check=True, capture_output=True)
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--merge") == 0
    (record,) = _images_lock(project)["images"]
    assert record["tags"][0] == ca_tag
    assert {p: v["digest"] for p, v in record["platforms"].items()} == {
        "linux/amd64": record["platforms"]["linux/amd64"]["image_id"],
        "linux/arm64": record["platforms"]["linux/arm64"]["image_id"],
    }
    index = json.loads(RegistryClient().manifest_bytes(parse_reference(f"{repo}:latest"))[0])
    assert len(index["manifests"]) == 2 and record["digest"] == tag_digest(repo, "latest")


def test_merge_refuses_a_platform_whose_gate_failed(docker_client: Any, project: Path, repo: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    content = f"split-fail {uuid.uuid4()}"
    amd, arm = docker_import(content, "linux/amd64"), docker_import(content, "linux/arm64")
    write_gate(project, "cpu", image_id(amd), platform="linux/amd64")
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", amd,
               "--platform-only") == 0
    write_gate(project, "cpu", image_id(arm), platform="linux/arm64")
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--image", arm,
               "--platform-only") == 0
    write_gate(project, "cpu", image_id(arm), platform="linux/arm64", passed=False)
    assert run("-C", str(project), "publish", "cpu", "--registry", repo, "--merge") == 14
    assert "gates failed" in capsys.readouterr().err
    assert tag_digest(repo, "cpu") is None
