"""The one Platform type: every spelling parses to the same value; unknown ones are refused."""

from __future__ import annotations

import pytest

from lockdock.errors import UsageError
from lockdock.platform import IMAGE_PLATFORMS, PLATFORMS, Platform


@pytest.mark.parametrize(
    ("text", "subdir", "docker", "arch"),
    [
        ("linux-64", "linux-64", "linux/amd64", "amd64"),
        ("linux/amd64", "linux-64", "linux/amd64", "amd64"),
        ("linux-aarch64", "linux-aarch64", "linux/arm64", "arm64"),
        ("linux/arm64", "linux-aarch64", "linux/arm64", "arm64"),
        ("osx-arm64", "osx-arm64", None, "arm64"),
    ],
)
def test_every_spelling_is_one_platform(
    text: str, subdir: str, docker: str | None, arch: str
) -> None:
    platform = Platform.parse(text)
    assert (platform.subdir, platform.docker, platform.arch) == (subdir, docker, arch)


@pytest.mark.parametrize("text", ["linux/riscv64", "linux64", "", "win-32"])
def test_an_unknown_platform_is_one_error_naming_it(text: str) -> None:
    with pytest.raises(UsageError, match=f"Unknown platform {text!r}.*linux-64"):
        Platform.parse(text)


def test_images_are_built_only_for_platforms_with_a_docker_name() -> None:
    assert [p.docker for p in IMAGE_PLATFORMS] == ["linux/amd64", "linux/arm64"]
    with pytest.raises(UsageError, match="builds no images for osx-64"):
        Platform.image("osx-64")
    assert Platform.image("linux/arm64").subdir == "linux-aarch64"


def test_host_is_a_known_platform() -> None:
    assert Platform.host() in PLATFORMS
