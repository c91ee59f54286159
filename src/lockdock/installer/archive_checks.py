"""Every conda archive of an install read and checked against its lock entry before the
prefix is touched: its own ``info/index.json`` (name, version, build, subdir), and every path
it would write (``info/paths.json``); after linking, every symlink it made.

py-rattler links ``<package cache>/<_path>`` to ``<prefix>/<_path>`` for each ``paths.json``
entry and copies symlinks as they are, checking neither: a ``../`` or absolute path, or a
link that points out of the prefix, would write or point outside it (or, absolute, abort the
process in rattler's path resolver). So, refused (IntegrityError, exit 7) naming the
artifact and the member:

- before the prefix is touched: a ``_path`` that is not relative, is empty, has a ``..``
  component, or lies below a symlink of the same archive (writing through it could land
  anywhere). ``paths.json`` is the archive's small info part (20 ms for a 13 MB
  ``.tar.bz2``); its payload is not read twice. (An old archive without one has its tar
  members listed instead: the one full pass, and the tar links' targets checked too.)
- after py-rattler linked the packages, before anything else: every path a package's
  record lists (``conda-meta``'s ``paths_data``) that is a symlink must have a relative target
  that stays inside the prefix when resolved from the link's folder (conda-build makes links
  into the prefix relative; a link to a system file, ``/etc/passwd``, is refused: a lock's
  environment must not depend on the host). ``paths.json`` has no link targets; reading
  them from the payload would decompress every archive once more (1.6 s for that
  ``.tar.bz2``), so they are read from the links themselves, and the prefix stays marked
  incomplete when one is refused;
- a hard link's target (old archives' tar members) is a member path (same rules).

The checks are pure (``listing_problem``, ``index_problems``, ``link_problem``); the edges
are ``conda_records`` (the archives, all concurrently) and ``check_installed_links``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from lockdock.errors import IntegrityError
from lockdock.installer.lockfile import LockedArtifact
from lockdock.installer.store import artifact_path, describe

if TYPE_CHECKING:
    from rattler.package_streaming import ArchiveEntry
    from rattler.repo_data import RepoDataRecord

NOARCH = "noarch"


@dataclass(frozen=True)
class Member:
    """One tar member of an archive: its path and, for a link, its target."""

    name: str
    symlink: str | None = None
    hardlink: str | None = None


@dataclass(frozen=True)
class Listing:
    """What an archive would write: its ``info/paths.json`` paths and which of them are
    symlinks, or (an old archive without paths.json) its tar members."""

    members: tuple[Member, ...]
    paths: tuple[str, ...]
    softlinks: tuple[str, ...] = ()


# --- pure checks -------------------------------------------------------------------------


def path_problem(path: str) -> str | None:
    """Why ``path`` (relative to the prefix) is not a path inside it, or None."""
    if not path or "\0" in path:
        return "is empty or holds a NUL byte"
    if path.startswith("/"):
        return "is absolute"
    if ".." in path.split("/"):
        return "has a '..' component"
    return None


def link_problem(name: str, target: str) -> str | None:
    """Why the symlink ``name -> target`` points outside the prefix, or None."""
    if not target or "\0" in target:
        return "has an empty target"
    if target.startswith("/"):
        return f"points to the absolute path {target!r}"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        return f"points to {target!r}, outside the prefix"
    return None


def _below_link(path: str, links: frozenset[str]) -> str | None:
    parts = posixpath.normpath(path).split("/")
    for depth in range(1, len(parts)):
        folder = "/".join(parts[:depth])
        if folder in links:
            return folder
    return None


def listing_problem(listing: Listing) -> str | None:
    """The first unsafe member or path of ``listing`` as "member 'x' why", or None."""
    links = frozenset(
        [posixpath.normpath(m.name) for m in listing.members
         if m.symlink is not None and path_problem(m.name) is None]
        + [posixpath.normpath(p) for p in listing.softlinks if path_problem(p) is None]
    )  # fmt: skip
    for member in listing.members:
        why = path_problem(member.name)
        if why is None and member.symlink is not None:
            why = link_problem(member.name, member.symlink)
        if why is None and member.hardlink is not None:
            problem = path_problem(member.hardlink)
            why = f"is a hard link whose target {member.hardlink!r} {problem}" if problem else None
        if why is None and (folder := _below_link(member.name, links)):
            why = f"is below the archive's symlink {folder!r}"
        if why is not None:
            return f"member {member.name!r} {why}"
    for path in listing.paths:
        why = path_problem(path)
        if why is None and (folder := _below_link(path, links)):
            why = f"is below the archive's symlink {folder!r}"
        if why is not None:
            return f"info/paths.json path {path!r} {why}"
    return None


def url_subdir(artifact: LockedArtifact) -> str | None:
    """The subdir folder of ``artifact``'s URL (``.../linux-64/x.conda``), None when the URL's
    folder is not a platform name (a plain folder of files: ``file:///pkgs/x.conda``)."""
    from rattler.platform import Subdir

    folder = artifact.url.rsplit("/", 2)[-2] if artifact.url.count("/") >= 2 else ""
    return folder if folder in {str(p) for p in Subdir.all()} else None


def index_problems(artifact: LockedArtifact, name: str, version: str, build: str,
                   subdir: str | None) -> list[str]:  # fmt: skip
    """How an archive's index.json (``name``..``subdir``) disagrees with its lock entry: name
    and version as locked, build as the URL's file name says, subdir as the URL's folder says
    (or, for a URL without one, the lock's platform or noarch)."""
    problems = []
    if name != artifact.name:
        problems.append(f"name {name!r} (the lock: {artifact.name!r})")
    if version != artifact.version:
        problems.append(f"version {version!r} (the lock: {artifact.version!r})")
    if artifact.build is not None and build != artifact.build:
        problems.append(f"build {build!r} (the lock's file name: {artifact.build!r})")
    if subdir and subdir != "unknown":
        folder = url_subdir(artifact)
        allowed = {folder} if folder else {artifact.platform, NOARCH}
        if subdir not in allowed:
            expected = folder or f"{artifact.platform} or {NOARCH}"
            problems.append(f"subdir {subdir!r} (the lock entry: {expected!r})")
    return problems


# --- edges: reading the archives -----------------------------------------------------------


async def _listing(path: Path) -> Listing:
    from rattler.package_streaming import PackageArchive

    archive = await PackageArchive.from_path(path)
    try:
        entries = (await archive.paths_json()).paths
    except OSError:
        if await archive.read_file("info/paths.json") is not None:
            raise
        return await _members(archive, path)  # an old package without one
    paths = tuple(e.relative_path.as_posix() for e in entries)
    softlinks = tuple(p for e, p in zip(entries, paths, strict=True) if e.path_type.softlink)
    return Listing((), paths, softlinks)


async def _members(archive: Any, path: Path) -> Listing:
    """The tar members of an archive without paths.json (rattler links its members)."""
    sections: tuple[Literal["info", "pkg"], ...] = (
        ("info", "pkg") if path.name.endswith(".conda") else ("pkg",))
    members = []
    for section in sections:  # a .tar.bz2 is one tar: its "info" pass would read it all again
        stream = cast("AsyncGenerator[ArchiveEntry, None]", archive.stream(section))
        async with contextlib.aclosing(stream) as entries:
            async for entry in entries:  # listed, never read
                target = entry.link_target if entry.is_link else None
                members.append(Member(entry.name, target if entry.is_symlink else None,
                                      target if entry.is_hardlink else None))  # fmt: skip
    return Listing(tuple(members), ())


#: py-rattler's own refusal of a tar member (absolute, or with a ``..`` component).
_RATTLER_BAD_PATH = re.compile(r"invalid package-relative archive path: (.*)")


async def _check(artifact: LockedArtifact, store: Path) -> RepoDataRecord:
    from rattler.repo_data import RepoDataRecord

    path = artifact_path(store, artifact)
    try:
        record = await RepoDataRecord.from_package_archive(path)
        listing = await _listing(path)
    except Exception as error:  # rattler's own types: an archive it cannot read
        bad = _RATTLER_BAD_PATH.search(str(error))
        if bad:
            why = path_problem(bad.group(1)) or "is not a path inside the package"
            raise _unsafe(artifact, f"member {bad.group(1)!r} {why}") from None
        raise IntegrityError(
            f"{describe(artifact)}: the archive in store {store} cannot be read as a package: "
            f"{error}. Delete it and run `lockdock fetch` again."
        ) from None
    problems = index_problems(artifact, record.name.normalized, str(record.version),
                              str(record.build), record.subdir)  # fmt: skip
    if problems:
        raise IntegrityError(
            f"{describe(artifact)}: the archive's index.json says {'; '.join(problems)}, not "
            "what the lock names. Refusing to install it (nothing was written)."
        )
    problem = listing_problem(listing)
    if problem is not None:
        raise _unsafe(artifact, problem)
    if artifact.sha256:  # md5-only entries (explicit locks): the archive's own sha256
        record.sha256 = bytes.fromhex(artifact.sha256)
    if artifact.md5:
        record.md5 = bytes.fromhex(artifact.md5)
    record.channel = channel_of(artifact.url)
    return record


def _unsafe(artifact: LockedArtifact, problem: str) -> IntegrityError:
    return IntegrityError(f"{describe(artifact)}: unsafe archive, its {problem}. Refusing to "
                          "install it (nothing was written).")  # fmt: skip


def check_installed_links(prefix: Path, records: Sequence[tuple[Path, Mapping[str, Any]]]
                          ) -> None:  # fmt: skip
    """Every symlink the installed conda ``records`` (``prefix.conda_records``) list: its
    target relative and inside the prefix (``link_problem``), else IntegrityError naming the
    package and the link; the prefix is left marked incomplete."""
    for record_file, record in records:
        paths_data = record.get("paths_data")
        entries = paths_data.get("paths", ()) if isinstance(paths_data, Mapping) else ()
        for entry in entries:  # every path, whatever paths.json calls it: it may lie
            name = str(entry.get("_path", "")) if isinstance(entry, Mapping) else ""
            try:
                target = os.readlink(prefix / name)
            except OSError:
                continue  # not a link (or not there: the prefix verification names it)
            problem = link_problem(name, target)
            if problem is not None:
                raise IntegrityError(
                    f"{record_file.stem} (conda): unsafe archive, its member {name!r} "
                    f"{problem}. Refused after linking: the prefix {prefix} is left marked "
                    "incomplete (not usable, emptied by the next install)."
                )


def channel_of(url: str) -> str:
    """``https://host/channel/linux-64/x.conda`` -> ``https://host/channel``."""
    return url.rsplit("/", 2)[0]


async def _check_all(conda: Sequence[LockedArtifact], store: Path) -> list[RepoDataRecord]:
    """All archives at once, a few at a time; every read finished before the first refusal
    (in lock order) is raised: no rattler stream is left open."""
    slots = asyncio.Semaphore(max(2, min(16, os.cpu_count() or 1)))

    async def one(artifact: LockedArtifact) -> RepoDataRecord:
        async with slots:
            return await _check(artifact, store)

    results = await asyncio.gather(*(one(a) for a in conda), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if not isinstance(r, BaseException)]


def conda_records(conda: Sequence[LockedArtifact], store: Path) -> list[RepoDataRecord]:
    """Read and check every archive (index.json against its lock entry, every path it would
    write), before the prefix is touched: a refused install leaves no prefix behind."""
    return asyncio.run(_check_all(conda, store))


__all__ = [
    "Listing", "Member", "channel_of", "check_installed_links", "conda_records",
    "index_problems", "link_problem", "listing_problem", "path_problem", "url_subdir",
]
