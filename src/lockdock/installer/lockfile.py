"""Reading conda-lock.yml (unified v1 and the older key-sorted layout) for every later step.

Standard library + PyYAML only: the installer uses this inside image builds. Writing locks
is lock.py's job, through conda-lock's own models.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from lockdock.errors import SpecError, UsageError

CONDA_SUFFIXES = (".conda", ".tar.bz2")


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


def _load_yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.load(handle, Loader=loader)
    except FileNotFoundError:
        raise SpecError(f"Lock file {path} does not exist: run `lockdock lock` first.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"Lock file {path} is not valid YAML{where}: {error}") from None


def read_lock(path: Path | str) -> Lock:
    path = Path(path)
    data = _load_yaml(path)
    if not isinstance(data, dict) or "package" not in data or "metadata" not in data:
        raise SpecError(
            f"{path} is not a conda-lock file: it needs top-level `metadata` and `package`."
        )
    meta = data["metadata"] or {}
    channels = tuple(
        c["url"] if isinstance(c, dict) else str(c) for c in meta.get("channels") or ()
    )
    merged: dict[tuple[str, str, str], LockedArtifact] = {}
    for index, entry in enumerate(data["package"] or ()):
        try:
            artifact = _artifact(entry)
        except (KeyError, TypeError) as error:
            raise SpecError(f"{path}: package entry #{index + 1} lacks {error}.") from None
        previous = merged.get(artifact.key)
        if previous is not None:  # one entry per category in some writers
            artifact = LockedArtifact(
                **{**artifact.__dict__, "categories": previous.categories | artifact.categories}
            )
        merged[artifact.key] = artifact
    return Lock(
        path=path,
        content_hash=dict(meta.get("content_hash") or {}),
        platforms=tuple(meta.get("platforms") or ()),
        channels=channels,
        sources=tuple(meta.get("sources") or ()),
        artifacts=tuple(merged.values()),
    )


def _artifact(entry: Mapping[str, Any]) -> LockedArtifact:
    hashes = entry.get("hash") or {}
    category = entry.get("category") or "main"
    categories = entry.get("categories") or [category]
    return LockedArtifact(
        name=str(entry["name"]),
        version=str(entry["version"]),
        manager=str(entry["manager"]),
        platform=str(entry["platform"]),
        url=str(entry["url"]),
        sha256=hashes.get("sha256"),
        md5=hashes.get("md5"),
        categories=frozenset(categories),
        dependencies={str(k): str(v) for k, v in (entry.get("dependencies") or {}).items()},
    )
