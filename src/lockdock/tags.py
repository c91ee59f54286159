"""Every tag lockdock writes, computed in one place (build, publish, pin and CI use it).

- content-addressed: ``<flavor>-<sha256(lock file)[:12]>`` names the exact lock;
- descriptive: ``<flavor>-py3.11-torch2.13[-cu13.0]`` (``facts.descriptor``), and when
  published, ``-YYYYMMDD`` after it;
- moving: locally ``latest``; published, the flavor's ``moving-tags`` (flavor.toml);
- per-arch: ``<tag>-<arch>`` for a platform pushed or built on its own (``arch_tag``).

Tags are pure strings; names (``lockdock/cpu``, ``ghcr.io/org/lockdock``) are joined by the
caller. A tag holds at most 128 of ``[A-Za-z0-9_.-]`` (the distribution spec).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lockdock.platform import Platform

#: The local moving tag of every build (``lockdock/<flavor>:latest``).
LOCAL_MOVING = "latest"
_UNSAFE = re.compile(r"[^\w.-]")


def safe(text: str) -> str:
    return _UNSAFE.sub("_", text)[:128]


@dataclass(frozen=True)
class Tags:
    content_addressed: str
    descriptive: tuple[str, ...] = ()
    moving: tuple[str, ...] = ()

    @property
    def in_order(self) -> tuple[str, ...]:
        """Push order: the content tag first, moving tags last (a failure moves nothing)."""
        return (self.content_addressed, *self.descriptive, *self.moving)

    def named(self, name: str) -> tuple[str, ...]:
        return tuple(f"{name}:{tag}" for tag in self.in_order)


def content_tag(flavor: str, lock_sha256: str) -> str:
    return safe(f"{flavor}-{lock_sha256[:12]}")


def arch_tag(tag: str, platform: Platform) -> str:
    return safe(f"{tag}-{platform.arch}")


def local_name(flavor: str) -> str:
    """The local repository of a flavor's builds (what ``test`` and ``publish`` look for)."""
    return f"lockdock/{flavor}"


def local_tags(
    flavor: str, lock_sha256: str, descriptor: str, platform: Platform, native: Platform
) -> Tags:
    """The tags of one local build; a platform other than this machine's gets ``-<arch>``."""

    def tag(text: str) -> str:
        return arch_tag(text, platform) if platform != native else safe(text)

    return Tags(
        content_addressed=tag(f"{flavor}-{lock_sha256[:12]}"),
        descriptive=(tag(f"{flavor}-{descriptor}"),) if descriptor else (),
        moving=(tag(LOCAL_MOVING),),
    )


def publish_tags(
    flavor: str, lock_sha256: str, descriptor: str, date: str, moving: tuple[str, ...]
) -> Tags:
    """The tags ``publish`` pushes; ``moving`` comes from the flavor's data."""
    descriptive = "-".join(part for part in (flavor, descriptor, date) if part)
    return Tags(
        content_addressed=content_tag(flavor, lock_sha256),
        descriptive=(safe(descriptive),),
        moving=tuple(safe(tag) for tag in moving),
    )
