"""BuildKit option fragments: compression and the build cache (pure)."""

from __future__ import annotations

import pytest

from lockdock.buildopts import (
    cache_argv,
    cache_to_problem,
    compression_options,
    with_compression,
)
from lockdock.errors import UsageError


def test_compression_pins_a_level_for_each_choice() -> None:
    force = "force-compression=true"  # the cache's blobs in another format are converted
    assert compression_options("gzip") == f"compression=gzip,compression-level=6,{force}"
    assert compression_options("zstd") == f"compression=zstd,compression-level=3,{force}"
    zstd = with_compression("type=oci,dest=x", "zstd")
    assert zstd == f"type=oci,dest=x,compression=zstd,compression-level=3,{force}"
    with pytest.raises(UsageError, match="estargz"):
        compression_options("estargz")


def test_a_plain_reference_is_the_registry_cache_and_types_pass_through() -> None:
    assert cache_argv(["127.0.0.1:5000/cache:cpu"], ["127.0.0.1:5000/cache:cpu"]) == [
        "--cache-from", "type=registry,ref=127.0.0.1:5000/cache:cpu",
        "--cache-to", "type=registry,ref=127.0.0.1:5000/cache:cpu,mode=max,"
                      "image-manifest=true,oci-mediatypes=true",
    ]  # fmt: skip
    assert cache_argv(["type=gha"], ["type=local,dest=/tmp/c,mode=max"]) == [
        "--cache-from", "type=gha", "--cache-to", "type=local,dest=/tmp/c,mode=max"]
    assert cache_argv() == []


@pytest.mark.parametrize("value", ["", "ref=x,mode=max", "type=ftp,ref=x"])
def test_malformed_cache_values_are_usage_errors(value: str) -> None:
    with pytest.raises(UsageError):
        cache_argv(cache_to=[value])


def test_the_docker_driver_cannot_export_a_cache() -> None:
    problem = cache_to_problem("docker", ["reg/cache:x"])
    assert problem is not None and "docker-container" in problem
    assert cache_to_problem("docker-container", ["reg/cache:x"]) is None
    assert cache_to_problem("docker", ["type=inline"]) is None
    assert cache_to_problem("docker", []) is None
