"""Every tag lockdock writes, computed in one place (build, publish, pin and CI use it).

- content-addressed: ``<flavor>-<sha256(lock file)[:12]>`` names the exact lock;
- descriptive: ``<flavor>-py3.11-torch2.13[-cu13.0]`` (``facts.descriptor``), and when
  published, ``-YYYYMMDD`` after it;
- moving: locally ``latest``; published, the flavor's ``moving-tags`` (flavor.toml);
- per-arch: ``<tag>-<arch>`` for a platform pushed or built on its own (``arch_tag``).

Tags are pure strings; names (``lockdock/cpu``, ``ghcr.io/org/lockdock``) are joined by the
caller. A tag is ``TAG`` (the distribution spec). The project is checked against these rules
when it loads (lockdock.flavors): a flavor name must make a valid ``local_name`` and leave
room in 128 characters for the tags built from it (``flavor_name_problem``), and every
written moving tag must be a tag that is not content-addressed (``moving_tag_problem``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lockdock.errors import UsageError
from lockdock.platform import PLATFORMS, Platform

#: The local moving tag of every build (``lockdock/<flavor>:latest``).
LOCAL_MOVING = "latest"
_UNSAFE = re.compile(r"[^\w.-]")
#: The OCI distribution spec's tag grammar, matched whole (``fullmatch``).
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
TAG_RULE = ("1 to 128 ASCII letters, digits, '_', '.' and '-', not starting with '.' or '-' "
            "(the OCI tag grammar [A-Za-z0-9_][A-Za-z0-9._-]{0,127})")
#: The longest flavor name: ``<flavor>-<hash12>-<arch>`` takes at most 64 + 21 of a tag's 128
#: characters, leaving the descriptive tag room for its versions, date and arch.
MAX_FLAVOR_NAME = 64
FLAVOR_NAME_RULE = (f"1 to {MAX_FLAVOR_NAME} lowercase ASCII letters and digits, with '.', "
                    "'_', '__' or runs of '-' only between them (e.g. cuda-12, cpu_mkl)")
_ARCHS = "|".join(sorted({re.escape(p.arch) for p in PLATFORMS}))
#: What ``content_tag`` and ``arch_tag`` of it make: a moving tag of this shape would move
#: a tag that must name one lock forever.
_CONTENT_SHAPE = re.compile(rf".+-[0-9a-f]{{12}}(?:-(?:{_ARCHS}))?")


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


def flavor_name_problem(name: str) -> str | None:
    """Why ``name`` (a folder of images/) cannot be a flavor's name, or None."""
    # Imported here: lockdock.registry may take ``TAG`` from this module (one home).
    from lockdock.registry import parse_reference

    local = local_name(name)
    try:
        ref = parse_reference(local)
    except UsageError:
        ref = None
    if ref is None or ref.name != local or ref.tag or ref.digest or "/" in name:
        return f"{name!r} cannot be part of the image name {local!r}"
    if len(name) > MAX_FLAVOR_NAME:
        return (f"{name[:16]!r}… is {len(name)} characters long, too long for the tags made "
                f"from it ({MAX_FLAVOR_NAME} at most)")
    return None


def moving_tag_problem(tag: str) -> str | None:
    """Why ``tag`` (written in a flavor's ``moving-tags``) must not be pushed, or None."""
    if not tag:
        return ("'' is empty: Docker would push it as `latest`, moving `latest` without "
                "saying so")
    if not TAG.fullmatch(tag):
        return f"{tag!r} is not a tag: a tag is {TAG_RULE}"
    if _CONTENT_SHAPE.fullmatch(tag):
        return (f"{tag!r} has the shape of a content-addressed tag (<flavor>-<12 hex "
                "digits>[-<arch>]), which names one lock and never moves")
    return None


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
