"""lockdock.registry, pure parts: references, loopback hosts, what counts as a manifest.
(The HTTP client is exercised against fakes in test_publish_guards.py and the real local
registry in tests/engine/test_publish_engine.py.)"""

from __future__ import annotations

import hashlib
import json

import pytest

from lockdock.errors import RegistryError, UsageError
from lockdock.registry import check_manifest, is_loopback_host, parse_reference

DIGEST = "sha256:" + "a" * 64
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("debian", "docker.io", "library/debian", None, None),
        ("debian:12", "docker.io", "library/debian", "12", None),
        ("ghcr.io/org/img:cpu", "ghcr.io", "org/img", "cpu", None),
        (f"127.0.0.1:5000/team/ml:cpu@{DIGEST}", "127.0.0.1:5000", "team/ml", "cpu", DIGEST),
        (f"localhost/x@{DIGEST}", "localhost", "x", None, DIGEST),
        ("org/img", "docker.io", "org/img", None, None),
    ],
)
def test_references_parse_like_docker(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag,
                                                                   digest)
    assert str(ref) == text


def test_the_same_repository_spelled_two_ways_is_one_key() -> None:
    assert parse_reference("debian:12").key == parse_reference("docker.io/library/debian").key
    pinned = parse_reference("ghcr.io/o/i:t").with_tag("u").pinned(DIGEST)
    assert pinned == f"ghcr.io/o/i:u@{DIGEST}"


@pytest.mark.parametrize("text", ["UPPER/case", "x@sha256:short", "x:bad tag", "a//b", ""])
def test_invalid_references_are_usage_errors_naming_them(text: str) -> None:
    with pytest.raises(UsageError, match="Image reference"):
        parse_reference(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1:5000", True), ("localhost:5000", True), ("[::1]:5000", True),
     ("localhost", True), ("10.0.0.5:5000", False), ("ghcr.io", False),
     ("127.0.0.1.evil.example", False)],
)  # fmt: skip
def test_only_loopback_hosts_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_a_manifest_is_accepted_only_with_its_media_type_and_digest() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    real = f"sha256:{hashlib.sha256(body).hexdigest()}"
    ref = parse_reference("127.0.0.1:5000/x:y")
    check_manifest(ref, body, OCI_MANIFEST, real)
    check_manifest(ref, body, f"{OCI_MANIFEST}; charset=utf-8", None)
    with pytest.raises(RegistryError, match="did not answer like a registry"):
        check_manifest(ref, b"<html>login</html>", "text/html", None)
    with pytest.raises(RegistryError, match="Docker-Content-Digest header says"):
        check_manifest(ref, body, OCI_MANIFEST, DIGEST)
    with pytest.raises(RegistryError, match="the reference says"):
        check_manifest(parse_reference(f"127.0.0.1:5000/x@{DIGEST}"), body, OCI_MANIFEST, None)
