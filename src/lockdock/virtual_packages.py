"""Virtual packages per flavor and platform, read with conda-lock's own parser.

A flavor's ``virtual-packages.yml`` is conda-lock's ``--virtual-package-spec`` file::

    subdirs:
      linux-64:
        packages: {__unix: "0", __linux: "5.10", __glibc: "2.28", __cuda: "12.6",
                   __archspec: "1 x86_64"}

A value is ``VERSION`` or ``VERSION BUILD``. As in conda-lock, the file replaces the
defaults for every platform it names (nothing is merged).

Without a file, a flavor gets conda-lock's defaults *without* ``__cuda`` (conda-lock's
``--without-cuda``), i.e. for linux-64 ``__unix=0``, ``__linux=5.10``, ``__glibc=2.28``,
``__archspec=1=x86_64`` (``aarch64``/``ppc64le`` on the other Linux platforms), for osx-*
``__unix``, ``__osx=11.0``, ``__archspec``, for win-64 ``__win``, ``__archspec``. The
content hash is computed against exactly that repodata, so it equals what
``conda-lock lock --without-cuda`` (no spec file) or ``--virtual-package-spec FILE`` writes.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lockdock.errors import SpecError

if TYPE_CHECKING:
    from conda_lock.virtual_package import FakeRepoData

#: Platforms lockdock can lock: the ones conda-lock ships default virtual packages for.
KNOWN_PLATFORMS = (
    "linux-64",
    "linux-aarch64",
    "linux-ppc64le",
    "osx-64",
    "osx-arm64",
    "win-64",
)


@dataclass(frozen=True, order=True)
class VirtualPackage:
    name: str
    version: str
    build: str = ""

    def __str__(self) -> str:
        return f"{self.name}={self.version}" + (f"={self.build}" if self.build else "")


@dataclass(frozen=True)
class VirtualPackageSet:
    """The virtual packages of one flavor: per platform, plus the file it came from."""

    source: Path | None
    by_platform: dict[str, tuple[VirtualPackage, ...]]

    def for_platform(self, platform: str) -> tuple[VirtualPackage, ...]:
        if platform not in self.by_platform:
            where = self.source or "conda-lock's defaults"
            raise SpecError(
                f"{where} defines no virtual packages for platform {platform!r}: add a "
                f"`subdirs: {{{platform}: {{packages: ...}}}}` entry (conda-lock's "
                "--virtual-package-spec format), or drop the platform from `platforms:`."
            )
        return self.by_platform[platform]

    def glibc(self, platform: str) -> tuple[int, int] | None:
        """The ``__glibc`` version as (major, minor), or None when the platform has none."""
        for package in self.by_platform.get(platform, ()):
            if package.name == "__glibc":
                parts = package.version.split(".")
                try:
                    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
                except ValueError:
                    raise SpecError(
                        f"{self.source}: __glibc version {package.version!r} is not "
                        "MAJOR.MINOR."
                    ) from None
        return None

    def version_of(self, platform: str, name: str) -> str | None:
        for package in self.by_platform.get(platform, ()):
            if package.name == name:
                return package.version
        return None


def _repo_to_set(repo: FakeRepoData, source: Path | None) -> VirtualPackageSet:
    by_platform: dict[str, list[VirtualPackage]] = {}
    for package, subdirs in repo.packages_by_subdir.items():
        for subdir in subdirs:
            by_platform.setdefault(subdir, []).append(
                VirtualPackage(package.name, package.version, package.build_string)
            )
    return VirtualPackageSet(
        source=source, by_platform={k: tuple(sorted(v)) for k, v in by_platform.items()}
    )


@contextlib.contextmanager
def _quiet_conda_lock() -> Iterator[None]:
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def hashing_repo(virtual_packages_file: Path | None) -> FakeRepoData:
    """The FakeRepoData conda-lock builds for the same input: what the content hash covers.

    conda-lock: a spec file -> ``virtual_package_repo_from_specification(file)``; none ->
    ``default_virtual_package_repodata(cuda_version=with_cuda)``; lockdock's default flavor
    solves without ``__cuda``, which is conda-lock's ``--without-cuda`` (``""``).
    """
    from conda_lock.virtual_package import (
        default_virtual_package_repodata,
        virtual_package_repo_from_specification,
    )

    if virtual_packages_file is not None:
        validate_virtual_packages_file(virtual_packages_file)
        try:
            with _quiet_conda_lock():
                return virtual_package_repo_from_specification(virtual_packages_file)
        except Exception as error:  # pydantic ValidationError, AssertionError
            raise SpecError(
                f"{virtual_packages_file} is not a valid virtual-package spec "
                f"(conda-lock's --virtual-package-spec format): {_one_line(error)}"
            ) from None
    with _quiet_conda_lock():
        return default_virtual_package_repodata(cuda_version="")


def load_virtual_packages(virtual_packages_file: Path | None) -> VirtualPackageSet:
    """The virtual packages a flavor solves with (see the module docstring)."""
    return _repo_to_set(hashing_repo(virtual_packages_file), virtual_packages_file)


def validate_virtual_packages_file(path: Path) -> None:
    """Fail with the file and line for malformed YAML or a misspelt structure."""
    text = path.read_text(encoding="utf-8")
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path} is not valid YAML{where}: {_one_line(error)}") from None
    if not isinstance(data, dict) or set(data) != {"subdirs"}:
        raise SpecError(
            f"{path}: a virtual-package spec has exactly one top-level key, `subdirs:` "
            "(conda-lock's --virtual-package-spec format), e.g. "
            '`subdirs: {linux-64: {packages: {__cuda: "12.6", __glibc: "2.28"}}}`.'
        )
    subdirs = data["subdirs"]
    if not isinstance(subdirs, dict):
        raise SpecError(f"{path}: `subdirs:` must map platforms to `packages:`.")
    for platform, body in subdirs.items():
        if platform not in KNOWN_PLATFORMS:
            raise SpecError(
                f"{path}: unknown platform {platform!r} under `subdirs:`; known platforms "
                f"are {', '.join(KNOWN_PLATFORMS)}."
            )
        if not isinstance(body, dict) or set(body) != {"packages"}:
            raise SpecError(f"{path}: `subdirs: {platform}:` must hold only `packages:`.")
        packages = body["packages"]
        if not isinstance(packages, dict):
            raise SpecError(f"{path}: `{platform}: packages:` must be a mapping.")
        for name, version in packages.items():
            if not str(name).startswith("__"):
                raise SpecError(
                    f"{path}: {name!r} under {platform} is not a virtual package "
                    "(virtual package names start with `__`)."
                )
            if not isinstance(version, str):
                raise SpecError(
                    f"{path}: the version of {name} under {platform} must be a quoted "
                    f'string (write `{name}: "{version}"`: YAML reads 12.10 as 12.1).'
                )


def to_rattler(packages: Sequence[VirtualPackage]) -> list[Any]:
    """py-rattler GenericVirtualPackage objects for the solver."""
    from rattler import BuildString, GenericVirtualPackage, PackageName, Version

    # conda-lock's default osx-64 repodata holds __osx 10.15 and 11.0; conda (and
    # conda-lock's solver overrides) use the highest one.
    highest: dict[str, VirtualPackage] = {}
    for package in packages:
        current = highest.get(package.name)
        if current is None or Version(package.version) > Version(current.version):
            highest[package.name] = package
    return [
        GenericVirtualPackage(
            PackageName(p.name), Version(p.version), BuildString(p.build or "0")
        )
        for p in sorted(highest.values())
    ]


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
