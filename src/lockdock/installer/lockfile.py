"""Reading conda-lock.yml (unified v1 and the older key-sorted layout) for every later step.

Standard library + PyYAML only: the installer uses this inside image builds. Writing locks
is lock.py's job, through conda-lock's own models.
"""

from __future__ import annotations

import errno
import posixpath
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from lockdock.errors import SpecError, StaleLockError, UsageError
from lockdock.fsutil import local_file_error
from lockdock.platform import SUBDIRS

CONDA_SUFFIXES = (".conda", ".tar.bz2")
#: The lock ``version:`` values this reader understands (conda-lock refuses others too).
KNOWN_LOCK_VERSIONS = (1,)
_HEX = {"sha256": re.compile(r"^[0-9a-fA-F]{64}$"), "md5": re.compile(r"^[0-9a-fA-F]{32}$")}
#: URL schemes an artifact may be fetched from (``file://``: local channels and mirrors).
URL_SCHEMES = ("https", "http", "file")
#: The package managers a lock entry may name (conda-lock writes these two).
MANAGERS = ("conda", "pip")


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
        raise local_file_error(path, error, "read") from None


def lock_exists(path: Path | str) -> bool:
    """Whether a lock is at ``path``: False when nothing is there (the "no lock, run
    `lockdock lock`" case, exit 6), LocalFileError (exit 16) when something is there that is
    not a readable file: a directory, a symlink loop. ``Path.is_file`` says False for both,
    which would tell the user to lock again when re-locking cannot help."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return False  # a dangling symlink too: the lock it named is gone
    except OSError as error:
        raise local_file_error(path, error, "read") from None
    if stat.S_ISDIR(mode):
        raise local_file_error(path, IsADirectoryError(errno.EISDIR, "Is a directory"), "read")
    return True


def read_lock(path: Path | str) -> Lock:
    """Read and validate a lock; SpecError naming the file and entry for anything that would
    make later steps install something other than what the lock claims (``assemble_lock``)."""
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
    meta = data["metadata"]
    if not isinstance(meta, dict):
        raise SpecError(f"{path}: `metadata` is {_shown(meta)}; expected a mapping.")
    packages = data["package"]
    if not isinstance(packages, list):  # [] is an empty environment's lock
        raise SpecError(
            f"{path}: `package` is {_shown(packages)}; expected a list with one entry per "
            "locked package and platform. Re-lock with `lockdock lock`."
        )
    return assemble_lock(
        path,
        ((f"package entry #{n}", _artifact(entry, f"{path}: package entry #{n}"))
         for n, entry in enumerate(packages, start=1)),
        platforms=tuple(check_platform(p, f"{path}: `metadata.platforms`")
                        for p in _strings(path, meta, "platforms")),
        content_hash=_content_hash(path, meta.get("content_hash")),
        channels=_channels(path, meta.get("channels")),
        sources=_strings(path, meta, "sources"),
    )  # fmt: skip


def assemble_lock(
    path: Path,
    entries: Iterable[tuple[str, LockedArtifact]],
    *,
    content_hash: Mapping[str, str],
    platforms: tuple[str, ...],
    channels: tuple[str, ...],
    sources: tuple[str, ...],
) -> Lock:
    """The checks every lock passes, YAML or explicit: each entry's hashes, URL and platform
    (``_check_entry``), one entry per package and platform, and every dependency locked.

    ``entries``: (where in the file, e.g. ``package entry #3`` or ``line 7``; the entry).
    """
    merged: dict[tuple[str, str, str], LockedArtifact] = {}
    first_label: dict[tuple[str, str, str], str] = {}
    for label, artifact in entries:
        where = f"{path}: {label}"
        _check_entry(artifact, where)
        if artifact.platform not in platforms:
            raise SpecError(
                f"{where} ({artifact.name} {artifact.version}) is for platform "
                f"{artifact.platform}, which `metadata.platforms` does not list "
                f"({', '.join(platforms) or 'none'}). Re-lock with `lockdock lock`."
            )
        previous = merged.get(artifact.key)
        if previous is not None:  # one entry per category in some writers
            if _identity(previous) != _identity(artifact):
                raise SpecError(
                    f"{where} locks {artifact.manager} package {artifact.name} for "
                    f"{artifact.platform} a second time ({artifact.version}, {artifact.url}; "
                    f"{first_label[artifact.key]} says {previous.version}, "
                    f"{previous.url}). A lock holds one entry per package and platform (a "
                    "merge conflict resolved by keeping both?): re-lock with `lockdock lock`."
                )
            artifact = LockedArtifact(
                **{**artifact.__dict__, "categories": previous.categories | artifact.categories}
            )
        else:
            first_label[artifact.key] = label
        merged[artifact.key] = artifact
    _check_dependencies(path, merged.values())
    return Lock(
        path=path,
        content_hash=dict(content_hash),
        platforms=platforms,
        channels=channels,
        sources=sources,
        artifacts=tuple(merged.values()),
    )


def check_platform(value: object, where: str) -> str:
    """``value`` if it is a conda platform lockdock knows, else SpecError: a lock's platform
    names end up in file names (``render`` writes ``conda-<platform>.lock``)."""
    if not isinstance(value, str) or value not in SUBDIRS:
        shown = repr(value) if isinstance(value, str) else _shown(value)
        raise SpecError(
            f"{where}: platform {shown} is not a conda platform lockdock knows "
            f"({', '.join(SUBDIRS)}). Re-lock with `lockdock lock`."
        )
    return value


def usable_filename(name: str) -> bool:
    """Whether an artifact file name (the last segment of its URL, %-decoded) can name a file
    in its store folder: not empty, not ``.``/``..``, no slash, no NUL byte."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\x00" not in name


def _identity(artifact: LockedArtifact) -> tuple[object, ...]:
    """What two entries of one package and platform must share to be one artifact."""
    return (artifact.version, artifact.url, artifact.sha256, artifact.md5)


def _check_entry(artifact: LockedArtifact, where: str) -> None:
    """Hashes that are hex digests (the store path is built from sha256: ``../x`` would leave
    the store), and a URL with a scheme lockdock can fetch and a file name the store can
    hold."""
    for algorithm in ("sha256", "md5"):
        value = getattr(artifact, algorithm)
        if value is not None and not _HEX[algorithm].match(value):
            size = 64 if algorithm == "sha256" else 32
            raise SpecError(
                f"{where} ({artifact.name} {artifact.version}): {algorithm} {value!r} is not "
                f"{size} hexadecimal digits. Re-lock with `lockdock lock`."
            )
    try:
        parsed = urlparse(artifact.url)
    except ValueError:  # a malformed IPv6 host, `http://[x`
        parsed = urlparse("")
    if parsed.scheme not in URL_SCHEMES or not parsed.path:
        raise SpecError(
            f"{where} ({artifact.name} {artifact.version}): url {artifact.url!r} is not an "
            f"absolute {'/'.join(URL_SCHEMES)} URL."
        )
    if not usable_filename(artifact.filename):
        raise SpecError(
            f"{where} ({artifact.name} {artifact.version}): url {artifact.url!r} has no usable "
            "file name: it must end in the artifact's file name (…/hello-1.0-h0_0.conda, "
            "…/hello-1.0-py3-none-any.whl), not `.` or `..`, with no %2F or %00 in it."
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


def _artifact(entry: object, where: str) -> LockedArtifact:
    """One ``package:`` entry, every field of the type conda-lock writes (a string where a
    list belongs would be split into characters, ``null`` would become "None")."""
    if not isinstance(entry, dict):
        raise SpecError(
            f"{where} is {_shown(entry)}; expected a mapping with name, version, manager, "
            "platform, url and hash."
        )
    text = {key: _text(entry, key, where) for key in ("name", "version", "manager", "url")}
    where = f"{where} ({text['name']} {text['version']})"
    if text["manager"] not in MANAGERS:
        raise SpecError(
            f"{where}: `manager` is {text['manager']!r}; expected {' or '.join(MANAGERS)}."
        )
    platform = check_platform(_text(entry, "platform", where), where)
    hashes = _mapping(entry.get("hash"), f"{where}: `hash`", "sha256 and md5")
    sha256, md5 = hashes.get("sha256"), hashes.get("md5")
    dependencies = _mapping(entry.get("dependencies"), f"{where}: `dependencies`",
                            "package name to version spec")
    return LockedArtifact(
        name=text["name"],
        version=text["version"],
        manager=text["manager"],
        platform=platform,
        url=text["url"],
        sha256=None if sha256 is None else str(sha256),
        md5=None if md5 is None else str(md5),
        categories=_categories(entry, where),
        dependencies={str(k): str(v) for k, v in dependencies.items()},
    )


def _text(entry: Mapping[str, object], key: str, where: str) -> str:
    if key not in entry:
        raise SpecError(f"{where} lacks `{key}`. Re-lock with `lockdock lock`.")
    value = entry[key]
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}: `{key}` is {_shown(value)}; expected a non-empty string.")
    return value


def _mapping(value: object, where: str, expected: str) -> Mapping[object, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where} is {_shown(value)}; expected a mapping of {expected}.")
    return value


def _categories(entry: Mapping[str, object], where: str) -> frozenset[str]:
    """``categories:`` (a list, conda-lock's unified layout), else ``category:`` (one name,
    the older layout), else ``main``."""
    listed = entry.get("categories")
    if listed is None or listed == []:
        category = entry.get("category") or "main"
        if not isinstance(category, str):
            raise SpecError(f"{where}: `category` is {_shown(category)}; expected a name.")
        return frozenset({category})
    if not isinstance(listed, list) or not all(isinstance(c, str) and c for c in listed):
        raise SpecError(
            f"{where}: `categories` is {_shown(listed)}; expected a list of category names "
            "(`categories: [main]`)."
        )
    return frozenset(listed)


def _strings(path: Path, meta: Mapping[str, object], key: str) -> tuple[str, ...]:
    """``metadata.<key>``: a list of strings (absent or null: none)."""
    value = meta.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(
            f"{path}: `metadata.{key}` is {_shown(value)}; expected a list of strings "
            f"(`{key}: [{'linux-64' if key == 'platforms' else 'environment.yml'}]`)."
        )
    return tuple(value)


def _content_hash(path: Path, value: object) -> dict[str, str]:
    where = f"{path}: `metadata.content_hash`"
    hashes = _mapping(value, where, "platform to hash")
    for platform, digest in hashes.items():
        check_platform(platform, where)
        if not isinstance(digest, str):
            raise SpecError(f"{where}: the hash of {platform} is {_shown(digest)}; expected a "
                            "string. Re-lock with `lockdock lock`.")
    return {str(k): str(v) for k, v in hashes.items()}


def _channels(path: Path, value: object) -> tuple[str, ...]:
    """``metadata.channels``: names/URLs, or mappings with a ``url`` (unified layout)."""
    if value is None:
        return ()
    where = f"{path}: `metadata.channels`"
    if not isinstance(value, list):
        raise SpecError(f"{where} is {_shown(value)}; expected a list of channels.")
    channels: list[str] = []
    for number, channel in enumerate(value, start=1):
        url = channel.get("url") if isinstance(channel, dict) else channel
        if not isinstance(url, str) or not url:
            raise SpecError(
                f"{where}: channel #{number} is {_shown(channel)}; expected a channel name or "
                "URL, or a mapping with `url` (`- url: conda-forge`)."
            )
        channels.append(url)
    return tuple(channels)


def _shown(value: object) -> str:
    """``value`` for a message: its kind, and the value itself when short."""
    if value is None:
        return "empty (null)"
    kind = {dict: "a mapping", list: "a list", str: "the string", bool: "the boolean",
            int: "the number", float: "the number"}.get(type(value), type(value).__name__)
    shown = repr(value)
    return f"{kind} {shown}" if len(shown) <= 60 else f"{kind} {shown[:57]}..."
