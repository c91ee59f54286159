"""Bad input reaching ``publish``, ``pin`` and ``devcontainer``: registries that answer
nonsense (token endpoints, config blobs), hand-edited ``images.lock.json``, and the local tags
a failed publish must not leave behind. Each is one paragraph with its exit code, never a
traceback; fakes stand in for the registry (loopback HTTP) and the Docker engine."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from lockdock import cli, publish
from lockdock.errors import LockdockError, RegistryError, SpecError
from lockdock.installer.lockfile import read_lock
from lockdock.publish_plan import LocalImage
from lockdock.registry import RegistryClient, check_manifest, parse_reference
from lockdock.spec import load_project
from lockdock.testing.flavors import write_flavor
from lockdock.workspace import IMAGES_LOCK, Workspace
from tests.unit.test_publish_guards import (
    ARM_DIGEST,
    DIGEST,
    REPOSITORY,
    FakeRegistry,
    _project,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"

Route = tuple[int, dict[str, str], bytes]


class Served:
    """A loopback HTTP server answering each path (query string ignored) from ``routes``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                status, headers, body = served.routes.get(self.path.split("?", 1)[0],
                                                          (404, {}, b""))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)

            do_GET = do_HEAD = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def manifest(self, repository: str, tag: str, document: dict[str, Any]) -> str:
        body = json.dumps(document).encode()
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        self.routes[f"/v2/{repository}/manifests/{tag}"] = (
            200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}, body)
        return digest

    def blob(self, repository: str, body: bytes) -> str:
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        self.routes[f"/v2/{repository}/blobs/{digest}"] = (200, {}, body)
        return digest


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    # anonymous: whatever ~/.docker/config.json holds is not this test's
    monkeypatch.setattr(RegistryClient, "_credentials", lambda self, registry: None)
    fake = Served()
    threading.Thread(target=fake.server.serve_forever, args=(0.05,), daemon=True).start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "lockdock-crash" not in err
    return int(done.value.code or 0), err


# --- finding 5: a Bearer token endpoint answering something that is not a JSON token --------


def _bearer(served: Served, name: str, content_type: str, body: bytes) -> str:
    realm = f"http://{served.address}/token/{name}"
    served.routes[f"/v2/{name}/app/manifests/1"] = (
        401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake"'}, b"")
    served.routes[f"/token/{name}"] = (200, {"Content-Type": content_type}, body)
    return realm


@pytest.mark.parametrize(
    ("body", "found"),
    [(b"[]", "found list []"), (b'"abc"', "found str 'abc'"), (b"{}", "found dict {}"),
     (b'{"token": 7}', "found dict {'token': 7}"),
     (b'{"token": "a b\\r\\nX-Evil: 1"}', "found dict {'token': 'a b")],
)
def test_a_token_that_is_not_a_json_token_is_a_registry_error(
    served: Served, body: bytes, found: str
) -> None:
    realm = _bearer(served, "bearer", "application/json", body)
    ref = parse_reference(f"{served.address}/bearer/app:1")
    with pytest.raises(RegistryError) as raised:
        RegistryClient(retries=0).resolve(ref)
    message = str(raised.value)
    assert f"token endpoint {realm} for {ref.name}" in message
    assert "is not a JSON token (an object with a `token` or `access_token` string)" in message
    assert found in message


def test_a_token_endpoint_answering_html_says_so_not_unreachable(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    realm = _bearer(served, "bearerhtml", "text/html", b"<html>login</html>")
    dockerfile = tmp_path / "Dockerfile"
    text = f"FROM {served.address}/bearerhtml/app:1\n"
    dockerfile.write_text(text, encoding="utf-8")
    code, err = _run_cli(["-C", str(tmp_path), "pin", f"{served.address}/bearerhtml/app",
                          "--file", str(dockerfile)], capsys)
    assert code == RegistryError.exit_code == 13
    assert f"token endpoint {realm}" in err and "(text/html, 18 bytes)" in err
    assert "is not valid JSON (line 1, column 1)" in err and "not a JSON token" in err
    assert "could not be reached" not in err
    assert dockerfile.read_text(encoding="utf-8") == text


def test_a_token_that_is_a_list_is_exit_13_from_pin(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bearer(served, "bearerlist", "application/json", b"[]")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {served.address}/bearerlist/app:1\n", encoding="utf-8")
    code, err = _run_cli(["-C", str(tmp_path), "pin", f"{served.address}/bearerlist/app",
                          "--file", str(dockerfile)], capsys)
    assert code == 13 and "not a JSON token" in err


# --- finding 6: a per-arch tag's config blob that is not an image config --------------------


def _arch_manifest(served: Served, tag: str, config: bytes) -> str:
    return served.manifest(REPOSITORY, tag, {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
        "config": {"mediaType": CONFIG_TYPE, "digest": served.blob(REPOSITORY, config),
                   "size": len(config)}})


@pytest.mark.parametrize(
    ("config", "names"),
    [
        (b"this is not json", "is not valid JSON (line 1, column 1)"),
        (b"[" * 100_000, "cannot be read as JSON: its arrays/objects are nested"),
        (b"[]", "`(the document)` should be a JSON object, found list []"),
        (b'{"os": "linux", "architecture": ["amd64"]}', "`architecture` should be a string"),
        (b'{"os": "linux", "architecture": "amd64", "created": 5}', "`created` should be"),
        (b'{"os": "linux", "architecture": "amd64", "config": []}', "`config` should be"),
        (b'{"os": "linux", "architecture": "amd64", "config": {"Labels": ["a"]}}',
         "`config.Labels` should be an object of strings"),
        (b'{"os": "linux", "architecture": "amd64", "config": {"Labels": {"a": 1}}}',
         "`config.Labels` should be an object of strings"),
    ],
)
def test_a_config_blob_that_is_no_image_config_is_a_registry_error_naming_the_tag(
    served: Served, tmp_path: Path, config: bytes, names: str
) -> None:
    _project(tmp_path, [])
    lock = read_lock(tmp_path / "conda-lock.yml")
    _arch_manifest(served, "cpu-0123456789ab-amd64", config)
    repository = parse_reference(f"{served.address}/{REPOSITORY}")
    with pytest.raises(RegistryError) as raised:
        publish.registry_images(RegistryClient(retries=0), repository, lock, "cpu-0123456789ab")
    message = str(raised.value)
    assert f"of {served.address}/{REPOSITORY}:cpu-0123456789ab-amd64" in message
    assert names in message


def test_a_config_blob_altered_on_the_way_is_refused(served: Served) -> None:
    _arch_manifest(served, "x", b'{"os": "linux", "architecture": "amd64"}')
    (path,) = [p for p in served.routes if "/blobs/" in p]
    served.routes[path] = (200, {}, b'{"os": "linux", "architecture": "arm64"}')
    with pytest.raises(RegistryError, match="altered it"):
        RegistryClient(retries=0).image_config(parse_reference(f"{served.address}/"
                                                               f"{REPOSITORY}:x"))


def test_a_manifest_without_a_config_digest_is_named(served: Served) -> None:
    served.manifest(REPOSITORY, "x", {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                      "config": "sha256:../../etc"})
    with pytest.raises(RegistryError, match=r":x is not a single-platform image manifest"):
        RegistryClient(retries=0).image_config(parse_reference(f"{served.address}/"
                                                               f"{REPOSITORY}:x"))


def test_a_manifest_nested_too_deep_is_not_a_manifest() -> None:
    with pytest.raises(RegistryError, match="did not answer like a registry"):
        check_manifest(parse_reference("127.0.0.1:5000/x:y"), b"[" * 100_000, OCI_MANIFEST,
                       None)


def test_publish_merge_with_a_config_blob_not_json_is_exit_13_and_records_nothing(
    served: Served, tmp_path: Path
) -> None:
    _project(tmp_path, [])
    (tmp_path / "environment.yml").write_text("dependencies: [python]\n", encoding="utf-8")
    write_flavor(tmp_path / "images", "cpu")
    lock = read_lock(tmp_path / "conda-lock.yml")
    content = "cpu-" + hashlib.sha256(lock.path.read_bytes()).hexdigest()[:12]
    _arch_manifest(served, f"{content}-amd64", b"this is not json")
    with pytest.raises(RegistryError, match=f":{content}-amd64") as raised:
        publish.publish(tmp_path, load_project(tmp_path).one("cpu"), lock,
                        f"{served.address}/{REPOSITORY}", [], mode="merge",
                        registry=RegistryClient(retries=0), report=lambda _: None)
    assert raised.value.exit_code == 13
    assert not (tmp_path / IMAGES_LOCK).exists()


# --- finding 7: a hand-edited images.lock.json ---------------------------------------------

REPO = "127.0.0.1:5000/t/ml"
RECORD: dict[str, Any] = {
    "flavor": "cpu", "repository": REPO, "digest": DIGEST,
    "reference": f"{REPO}:cpu-0123456789ab@{DIGEST}",
    "tags": ["cpu-0123456789ab", "cpu-py3.12-20250101", "cpu", "latest"],
    "lock": "conda-lock.yml", "lock_hash": "0123456789ab" + "0" * 52, "date": "20250101",
    "revision": "f" * 40,
    "platforms": {"linux/amd64": {"digest": DIGEST, "image_id": DIGEST,
                                  "tag": "cpu-0123456789ab",
                                  "gate_report": "reports/cpu/a/gate.json"}},
}


def _with(**changes: Any) -> dict[str, Any]:
    return {**RECORD, **changes}


def _platform(**changes: Any) -> dict[str, Any]:
    return _with(platforms={"linux/amd64": {**RECORD["platforms"]["linux/amd64"], **changes}})


def _write_images_lock(root: Path, *records: dict[str, Any], **top: Any) -> Path:
    path = Workspace(root).images_lock_path
    path.write_text(json.dumps({"version": 1, "images": list(records), **top}),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("record", "field", "found"),
    [
        (_platform(image_id=["sha256:x"]), '`platforms["linux/amd64"].image_id` should be a '
         "digest", "found list ['sha256:x']"),
        (_platform(digest="sha256:x"), '`platforms["linux/amd64"].digest`', "str 'sha256:x'"),
        (_platform(tag="bad tag"), '`platforms["linux/amd64"].tag`', "str 'bad tag'"),
        (_platform(gate_report=3), '`platforms["linux/amd64"].gate_report`', "int 3"),
        (_with(platforms={"linux/s390x": {}}), "`platforms` should be keyed by platform",
         "str 'linux/s390x'"),
        (_with(platforms=[]), "`platforms` should be an object", "list []"),
        (_with(tags="cpu"), "`tags` should be a list of image tags", "str 'cpu'"),
        (_with(tags=["cpu", 7]), "`tags` should be a list of image tags", "list ['cpu', 7]"),
        (_with(date="2025-01-01"), "`date` should be a date YYYYMMDD", "'2025-01-01'"),
        (_with(date=20250101), "`date` should be a date YYYYMMDD", "int 20250101"),
        (_with(lock_hash="abc"), "`lock_hash` should be 64 lowercase hex digits", "'abc'"),
        (_with(lock=["conda-lock.yml"]), "`lock` should be a string", "list"),
        (_with(revision=None), "`revision` should be a string", "NoneType None"),
        (_with(digest="sha256:x", reference=f"{REPO}:cpu@sha256:x"),
         "`digest` should be a digest", "'sha256:x'"),
        (_with(reference=f"{REPO}:cpu"), "`reference` should be 127.0.0.1:5000/t/ml:TAG@DIGEST",
         f"'{REPO}:cpu'"),
        (_with(reference=f"127.0.0.1:5000/t/other:cpu@{DIGEST}"), "`reference` should be",
         "t/other"),
        (_with(repository=f"{REPO}:cpu"), "`repository` should be a repository without tag",
         f"'{REPO}:cpu'"),
    ],
)
def test_every_field_of_images_lock_is_checked_where_it_is_read(
    tmp_path: Path, record: dict[str, Any], field: str, found: str
) -> None:
    path = _write_images_lock(tmp_path, record)
    with pytest.raises(SpecError) as raised:
        Workspace(tmp_path).read_images_lock()
    message = str(raised.value)
    assert message.startswith(f"{path} is not a valid images.lock.json (record 1): ")
    assert field in message and found in message
    assert f"(Record 1 is flavor 'cpu' in repository {record['repository']}.)" in message
    assert raised.value.exit_code == 3


def test_a_reference_that_does_not_parse_is_named(tmp_path: Path) -> None:
    path = _write_images_lock(tmp_path, _with(reference="Not A Reference"))
    with pytest.raises(SpecError, match=re.escape(
            f"{path} is not a valid images.lock.json (record 1): `reference`: Image reference "
            "'Not A")):
        Workspace(tmp_path).read_images_lock()


def test_version_true_is_not_version_1(tmp_path: Path) -> None:
    _write_images_lock(tmp_path, RECORD, version=True)
    with pytest.raises(SpecError, match="has version True"):
        Workspace(tmp_path).read_images_lock()


def test_two_records_of_one_flavor_and_repository_name_both(tmp_path: Path) -> None:
    elsewhere = _with(repository="ghcr.io/o/r", reference=f"ghcr.io/o/r:cpu-0@{DIGEST}")
    _write_images_lock(tmp_path, RECORD, _with(flavor="cuda"), elsewhere)
    assert Workspace(tmp_path).read_images_lock() is not None  # one per flavor and repository
    path = _write_images_lock(tmp_path, RECORD, _with(flavor="cuda"), RECORD)
    with pytest.raises(SpecError) as raised:
        Workspace(tmp_path).read_images_lock()
    assert str(raised.value) == (
        f"{path} has two records of flavor 'cpu' in repository {REPO} (records 1 and 3): "
        "there is one per flavor and repository. Fix or delete it; `lockdock publish` "
        "rewrites it.")


def test_devcontainer_with_a_duplicated_record_is_exit_3_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "environment.yml").write_text("dependencies: []\n", encoding="utf-8")
    write_flavor(tmp_path / "images", "cpu")
    path = _write_images_lock(tmp_path, RECORD, RECORD)
    code, err = _run_cli(["-C", str(tmp_path), "devcontainer", "cpu", "--repository", REPO],
                         capsys)
    assert code == 3
    assert str(path) in err and "two records of flavor 'cpu'" in err
    assert "choose one with --repository" not in err
    assert not (tmp_path / ".devcontainer").exists()


# --- finding 12 (and finding 7 through publish): nothing left behind by a failed publish ----


class FakeEngine:
    """The Docker SDK calls ``DockerPusher`` makes: local names -> image ids, and pushes
    that write into a ``FakeRegistry`` (or fail for the tags in ``fail``)."""

    def __init__(self, registry: FakeRegistry | None, names: dict[str, str]) -> None:
        self.registry = registry
        self.names = dict(names)
        self.fail: set[str] = set()
        self.api = self
        self.images = self

    def get(self, reference: str) -> Any:
        image_id = self.names.get(reference, reference if reference.startswith("sha256:")
                                  else None)
        if image_id is None:
            raise docker.errors.ImageNotFound(f"No such image: {reference}")
        tags = [n for n, i in self.names.items() if i == image_id]
        attrs = {"Os": "linux", "Architecture": "amd64", "Created": "2025-01-01T00:00:00Z",
                 "Config": {"Labels": {}}}
        return type("Image", (), {"id": image_id, "tags": tags, "attrs": attrs})()

    def tag(self, image: str, repository: str, tag: str, force: bool = False) -> bool:
        self.names[f"{repository}:{tag}"] = self.get(image).id
        return True

    def push(self, repository: str, tag: str, stream: bool, decode: bool) \
            -> Iterator[dict[str, Any]]:
        if tag in self.fail or self.registry is None:
            yield {"status": "The push refers to repository"}
            yield {"error": "dial tcp: connect: connection refused"}
            return
        digest = self.names[f"{repository}:{tag}"]
        self.registry.tags[tag] = digest
        yield {"status": f"{tag}: digest: {digest} size: 1"}

    def remove_image(self, image: str, noprune: bool = False) -> None:
        del self.names[image]


def _publish_with(root: Path, engine: FakeEngine, address: str, image: str = "local/ml:1",
                  report: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    (root / "environment.yml").write_text("dependencies: [python]\n", encoding="utf-8")
    write_flavor(root / "images", "cpu")
    return publish.publish(
        root, load_project(root).one("cpu"), read_lock(root / "conda-lock.yml"),
        f"{address}/{REPOSITORY}", [image], pusher=publish.DockerPusher(engine, attempts=1),
        registry=RegistryClient(retries=0), report=report, today="20250101")


AMD64 = LocalImage(platform="linux/amd64", reference="local/ml:1", digest=DIGEST)


def test_a_failed_publish_leaves_no_local_tag(tmp_path: Path) -> None:
    _project(tmp_path, [AMD64])
    engine = FakeEngine(None, {"local/ml:1": DIGEST})  # nothing listens: every push fails
    with pytest.raises(RegistryError, match="connection refused") as raised:
        _publish_with(tmp_path, engine, "127.0.0.1:9")
    assert raised.value.exit_code == 13
    assert engine.names == {"local/ml:1": DIGEST}
    assert not (tmp_path / IMAGES_LOCK).exists()


def test_a_publish_failing_late_puts_back_every_local_tag_it_made_or_moved(
    tmp_path: Path,
) -> None:
    _project(tmp_path, [AMD64])
    with FakeRegistry() as registry:
        moving = f"{registry.address}/{REPOSITORY}:cpu"
        before = {"local/ml:1": DIGEST, moving: ARM_DIGEST, "other/x:1": ARM_DIGEST}
        engine = FakeEngine(registry, before)
        engine.fail = {"latest"}  # the last tag: the content, descriptive and cpu tags went
        with pytest.raises(RegistryError, match="latest failed"):
            _publish_with(tmp_path, engine, registry.address)
        assert len(registry.tags) == 3  # pushed (a rerun pushes them again) ...
        assert engine.names == before  # ... but the engine's names are as they were
        assert not (tmp_path / IMAGES_LOCK).exists()
        engine.fail.clear()  # the rerun succeeds and keeps its local tags, as docker push does
        record = _publish_with(tmp_path, engine, registry.address)
    assert sorted(engine.names) == sorted(["local/ml:1", "other/x:1", *(
        f"{registry.address}/{REPOSITORY}:{tag}" for tag in record["tags"])])
    assert Workspace(tmp_path).read_images_lock() is not None  # what it wrote reads back


def test_a_local_tag_that_is_its_images_only_name_is_left_and_said(tmp_path: Path) -> None:
    _project(tmp_path, [AMD64])
    engine = FakeEngine(None, {})  # the image is given by id and has no name
    said: list[str] = []
    with pytest.raises(RegistryError):
        _publish_with(tmp_path, engine, "127.0.0.1:9", image=DIGEST, report=said.append)
    (left,) = engine.names
    assert any(f"left the local tag {left}" in line for line in said)


def test_publish_with_a_broken_images_lock_refuses_before_pushing(tmp_path: Path) -> None:
    _project(tmp_path, [AMD64])
    path = _write_images_lock(tmp_path, _platform(image_id=["sha256:x"]))
    text = path.read_text(encoding="utf-8")
    engine = FakeEngine(None, {"local/ml:1": DIGEST})
    with pytest.raises(SpecError, match=re.escape('`platforms["linux/amd64"].image_id`')) \
            as raised:
        _publish_with(tmp_path, engine, "127.0.0.1:9")
    assert isinstance(raised.value, LockdockError) and raised.value.exit_code == 3
    assert engine.names == {"local/ml:1": DIGEST}  # nothing tagged, nothing pushed
    assert path.read_text(encoding="utf-8") == text
