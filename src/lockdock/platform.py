"""The one platform type: a conda subdir, its Docker platform (if images are built for it),
and its CPU architecture names.

Every mapping between ``linux-64``, ``linux/amd64``, ``amd64`` and ``x86_64`` lives in
``PLATFORMS`` below; code elsewhere parses with ``Platform.parse`` (one error for an
unknown platform) and reads the attribute it needs.
"""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass

from lockdock.errors import UsageError


@dataclass(frozen=True, order=True)
class Platform:
    subdir: str  # conda's name: linux-64
    docker: str | None  # linux/amd64; None where lockdock locks but builds no image
    arch: str  # the Docker/OCI architecture: amd64 (tag suffixes, manifests)
    machine: str  # uname -m / wheel tag architecture: x86_64

    @property
    def buildable(self) -> bool:
        return self.docker is not None

    def __str__(self) -> str:
        return self.subdir

    @classmethod
    def parse(cls, text: str, *, what: str = "platform") -> Platform:
        """A conda subdir (``linux-64``) or a Docker platform (``linux/amd64``)."""
        found = _BY_NAME.get(text.strip())
        if found is None:
            known = ", ".join(p.subdir for p in PLATFORMS)
            images = ", ".join(str(p.docker) for p in PLATFORMS if p.docker)
            raise UsageError(
                f"Unknown {what} {text!r}: lockdock knows the conda platforms {known} "
                f"(images are built for {images})."
            )
        return found

    @classmethod
    def image(cls, text: str) -> Platform:
        """A platform lockdock builds images for, else UsageError naming the ones it does."""
        found = cls.parse(text)
        if not found.buildable:
            images = ", ".join(str(p.docker) for p in PLATFORMS if p.docker)
            raise UsageError(
                f"lockdock builds no images for {found.subdir}: it builds {images}."
            )
        return found

    @classmethod
    def host(cls) -> Platform:
        """This machine's platform (UsageError on a machine lockdock does not know)."""
        system = {"darwin": "osx", "windows": "win"}.get(
            _host.system().lower(), _host.system().lower()
        )
        machine = _host.machine().lower()
        for candidate in PLATFORMS:
            if candidate.subdir.startswith(system + "-") and machine in candidate.aliases():
                return candidate
        raise UsageError(f"This machine ({system} {machine}) is not a platform lockdock knows.")

    def aliases(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.machine.lower(), self.arch, *_MACHINE_ALIASES.get(
            self.machine, ()))))


#: Every platform lockdock can lock (conda-lock ships default virtual packages for these).
PLATFORMS: tuple[Platform, ...] = (
    Platform("linux-64", "linux/amd64", "amd64", "x86_64"),
    Platform("linux-aarch64", "linux/arm64", "arm64", "aarch64"),
    Platform("linux-ppc64le", None, "ppc64le", "ppc64le"),
    Platform("osx-64", None, "amd64", "x86_64"),
    Platform("osx-arm64", None, "arm64", "arm64"),
    Platform("win-64", None, "amd64", "AMD64"),
)
_MACHINE_ALIASES = {"x86_64": ("amd64",), "aarch64": ("arm64",), "AMD64": ("x86_64",)}
_BY_NAME: dict[str, Platform] = {
    **{p.subdir: p for p in PLATFORMS},
    **{p.docker: p for p in PLATFORMS if p.docker},
}
SUBDIRS: tuple[str, ...] = tuple(p.subdir for p in PLATFORMS)
IMAGE_PLATFORMS: tuple[Platform, ...] = tuple(p for p in PLATFORMS if p.buildable)
DOCKER_PLATFORMS: tuple[str, ...] = tuple(str(p.docker) for p in IMAGE_PLATFORMS)
