"""Channel mirrors: ``--mirror NAME=URL`` and ``LOCKDOCK_MIRRORS``, parsed in one place.

The solve fetches a channel from its mirror and the lock records the URLs the packages came
from, while ``metadata.channels`` keeps the names as written (they feed the content hash).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lockdock.errors import UsageError

MIRRORS_ENV = "LOCKDOCK_MIRRORS"
DEFAULT_CHANNEL_ALIAS = "https://conda.anaconda.org"


@dataclass(frozen=True)
class Mirrors:
    """Channel name (or URL) as written in environment.yml -> URL to fetch it from."""

    by_channel: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, entries: Iterable[str], source: str = "--mirror") -> Mirrors:
        result: dict[str, str] = {}
        for entry in entries:
            name, sep, url = entry.partition("=")
            name, url = name.strip(), url.strip()
            if not sep or not name or not url:
                raise UsageError(
                    f"{source} {entry!r} is not NAME=URL (e.g. "
                    "conda-forge=https://mirror.example/conda-forge)."
                )
            if "://" not in url:
                url = Path(url).resolve().as_uri()
            result[name.rstrip("/")] = url.rstrip("/")
        return cls(result)

    @classmethod
    def from_sources(cls, options: Iterable[str], environ: Mapping[str, str]) -> Mirrors:
        """``LOCKDOCK_MIRRORS`` (whitespace- or comma-separated), then ``--mirror`` options."""
        env_entries = environ.get(MIRRORS_ENV, "").replace(",", " ").split()
        merged = dict(cls.parse(env_entries, MIRRORS_ENV).by_channel)
        merged.update(cls.parse(options).by_channel)
        return cls(merged)

    def resolve(self, channel: str) -> str:
        """The URL to fetch ``channel`` from."""
        key = channel.rstrip("/")
        if key in self.by_channel:
            return self.by_channel[key]
        if "://" in key:
            return key
        return f"{DEFAULT_CHANNEL_ALIAS}/{key}"
