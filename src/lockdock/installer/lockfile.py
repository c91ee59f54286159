"""Reading conda-lock.yml (unified v1 and the older key-sorted layout) for every later step.

Standard library + PyYAML only: the installer uses this inside image builds. Writing locks
is lock.py's job, through conda-lock's own models.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lockdock.errors import SpecError, StaleLockError, UsageError

CONDA_SUFFIXES = (".conda", ".tar.bz2")
#: The lock ``version:`` values this reader understands (conda-lock refuses others too).
KNOWN_LOCK_VERSIONS = (1,)
_HEX = {"sha256": re.compile(r"^[0-9a-fA-F]{64}$"), "md5": re.compile(r"^[0-9a-fA-F]{32}$")}
#: URL schemes an artifact may be fetched from (``file://``: local channels and mirrors).
URL_SCHEMES = ("https", "http", "file")


@dataclass(frozen=True)
class LockedArtifact:
    """One locked package for one platform, as the lock names it."""

    name: str
    version: str
    manager: str  # "conda" or "pip"
    platform: str
    url: str
    sha256: str | None
    md5: str | None
    categories: frozenset[str]
    dependencies: Mapping[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return unquote(posixpath.basename(urlparse(self.url).path))

    @property
    def build(self) -> str | None:
        """The conda build string, read from the file name (``name-version-build.conda``)."""
        if self.manager != "conda":
            return None
        stem = self.filename
        for suffix in CONDA_SUFFIXES:
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        return stem.rsplit("-", 2)[-1]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.manager, self.platform, self.name)


@dataclass(frozen=True)
class Lock:
    path: Path
    content_hash: Mapping[str, str]
    platforms: tuple[str, ...]
    channels: tuple[str, ...]
    sources: tuple[str, ...]
    artifacts: tuple[LockedArtifact, ...]

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(c for a in self.artifacts for c in a.categories)

    def select(self, platform: str, categories: Iterable[str] = ("main",)) -> list[LockedArtifact]:
        """The artifacts to install for ``platform`` and ``categories``, conda before pip.

        Raises UsageError when the lock has no such platform or category.
        """
        if platform not in self.platforms:
            raise UsageError(
                f"Lock {self.path} has no platform {platform!r}: it was locked for "
                f"{', '.join(self.platforms) or 'no platform'}. Add it to `platforms:` in "
                "environment.yml and run `lockdock lock`."
            )
        wanted = frozenset(categories)
        unknown = wanted - self.categories
        if unknown:
            raise UsageError(
                f"Lock {self.path} has no category {', '.join(sorted(unknown))}: its "
                f"categories are {', '.join(sorted(self.categories))}."
            )
        chosen = [a for a in self.artifacts if a.platform == platform and a.categories & wanted]
        return sorted(chosen, key=lambda a: (a.manager != "conda", a.name))


def read_lock_bytes(path: Path | str) -> bytes:
    """The lock file's bytes; StaleLockError (exit 6) when there is none."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StaleLockError(
            f"Lock file {path} does not exist: run `lockdock lock` first."
        ) from None
    except OSError as error:
        from lockdock.fsutil import local_file_error

        raise local_file_error(path, error, "read") from None


def read_lock(path: Path | str) -> Lock:
    """Read and validate a lock; SpecError naming the file and entry for anything that would
    make later steps install something other than what the lock claims (see ``_validate``)."""
    return parse_lock(read_lock_bytes(path), Path(path))


def parse_lock(raw: bytes, path: Path) -> Lock:
    """``read_lock`` on bytes already read (a command that also hashes them reads once)."""
    from lockdock.installer.explicit import is_explicit_text, parse_explicit
    from lockdock.textio import decode_text, load_yaml

    text = decode_text(raw, path)
    if is_explicit_text(text):
        return parse_explicit(path, text)  # `conda-lock render --kind explicit`, `conda list`
    data = load_yaml(text, path)
    if not isinstance(data, dict) or "package" not in data or "metadata" not in data:
        raise SpecError(
            f"{path} is not a conda-lock file: it needs top-level `metadata` and `package`."
        )
    version = data.get("version")
    if version not in KNOWN_LOCK_VERSIONS:
        raise SpecError(
            f"{path} has lock `version: {version}`; lockdock (like conda-lock) reads version "
            f"{', '.join(map(str, KNOWN_LOCK_VERSIONS))} only. Re-lock with `lockdock lock`."
        )
    meta = data["metadata"] or {}
    if not isinstance(meta, dict) or not isinstance(data["package"] or [], list):
        raise SpecError(f"{path}: `metadata` must be a mapping and `package` a list.")
    channels = tuple(
        c["url"] if isinstance(c, dict) else str(c) for c in meta.get("channels") or ()
    )
    merged: dict[tuple[str, str, str], LockedArtifact] = {}
    first_index: dict[tuple[str, str, str], int] = {}
    for index, entry in enumerate(data["package"] or ()):
        where = f"{path}: package entry #{index + 1}"
        try:
            artifact = _artifact(entry)
        except (KeyError, TypeError, AttributeError) as error:
            raise SpecError(f"{where} lacks {error} (or is not a mapping).") from None
        _check_entry(artifact, where)
        previous = merged.get(artifact.key)
        if previous is not None:  # one entry per category in some writers
            if _identity(previous) != _identity(artifact):
                raise SpecError(
                    f"{where} locks {artifact.manager} package {artifact.name} for "
                    f"{artifact.platform} a second time ({artifact.version}, {artifact.url}; "
                    f"entry #{first_index[artifact.key] + 1} says {previous.version}, "
                    f"{previous.url}). A lock holds one entry per package and platform (a "
                    "merge conflict resolved by keeping both?): re-lock with `lockdock lock`."
                )
            artifact = LockedArtifact(
                **{**artifact.__dict__, "categories": previous.categories | artifact.categories}
            )
        else:
            first_index[artifact.key] = index
        merged[artifact.key] = artifact
    _check_dependencies(path, merged.values())
    return Lock(
        path=path,
        content_hash=dict(meta.get("content_hash") or {}),
        platforms=tuple(meta.get("platforms") or ()),
        channels=channels,
        sources=tuple(meta.get("sources") or ()),
        artifacts=tuple(merged.values()),
    )


def _identity(artifact: LockedArtifact) -> tuple[object, ...]:
    """What two entries of one package and platform must share to be one artifact."""
    return (artifact.version, artifact.url, artifact.sha256, artifact.md5)


def _check_entry(artifact: LockedArtifact, where: str) -> None:
    """Hashes that are hex digests (the store path is built from sha256: ``../x`` would leave
    the store), and a URL with a scheme lockdock can fetch."""
    for algorithm in ("sha256", "md5"):
        value = getattr(artifact, algorithm)
        if value is not None and not _HEX[algorithm].match(value):
            size = 64 if algorithm == "sha256" else 32
            raise SpecError(
                f"{where} ({artifact.name} {artifact.version}): {algorithm} {value!r} is not "
                f"{size} hexadecimal digits. Re-lock with `lockdock lock`."
            )
    parsed = urlparse(artifact.url)
    if parsed.scheme not in URL_SCHEMES or not parsed.path:
        raise SpecError(
            f"{where} ({artifact.name} {artifact.version}): url {artifact.url!r} is not an "
            f"absolute {'/'.join(URL_SCHEMES)} URL."
        )


def _check_dependencies(path: Path, artifacts: Iterable[LockedArtifact]) -> None:
    """Every dependency an entry names is locked for its platform: a lock missing one installs
    an environment that violates its own dependencies. Virtual packages (``__glibc``) are the
    machine's; pip names match conda or pip entries by their normalised name."""
    by_platform: dict[str, set[str]] = {}
    chosen = list(artifacts)
    for artifact in chosen:
        by_platform.setdefault(artifact.platform, set()).add(_normalised(artifact.name))
    missing: dict[tuple[str, str], list[str]] = {}
    for artifact in chosen:
        present = by_platform[artifact.platform]
        for dependency in artifact.dependencies:
            if dependency.startswith("__") or _normalised(dependency) in present:
                continue
            missing.setdefault((artifact.platform, dependency), []).append(artifact.name)
    if missing:
        listing = "; ".join(
            f"{dep} ({platform}, needed by {', '.join(sorted(needers))})"
            for (platform, dep), needers in sorted(missing.items())
        )
        raise SpecError(
            f"{path} is incomplete: {len(missing)} dependenc(ies) of locked packages have no "
            f"entry: {listing}. Installing it would give an environment that breaks its own "
            "dependencies; re-lock with `lockdock lock`."
        )


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _artifact(entry: Mapping[str, Any]) -> LockedArtifact:
    hashes = entry.get("hash") or {}
    category = entry.get("category") or "main"
    categories = entry.get("categories") or [category]
    sha256, md5 = hashes.get("sha256"), hashes.get("md5")
    return LockedArtifact(
        name=str(entry["name"]),
        version=str(entry["version"]),
        manager=str(entry["manager"]),
        platform=str(entry["platform"]),
        url=str(entry["url"]),
        sha256=None if sha256 is None else str(sha256),
        md5=None if md5 is None else str(md5),
        categories=frozenset(categories),
        dependencies={str(k): str(v) for k, v in (entry.get("dependencies") or {}).items()},
    )
