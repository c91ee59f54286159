"""Virtual packages per flavor and platform, read with conda-lock's own parser.

A flavor's ``virtual-packages.yml`` is conda-lock's ``--virtual-package-spec`` file::

    subdirs:
      linux-64:
        packages: {__unix: "0", __linux: "5.10", __glibc: "2.28", __cuda: "12.6",
                   __archspec: "1 x86_64"}

A value is ``VERSION`` or ``VERSION BUILD``. As in conda-lock, the file replaces the
defaults for every platform it names (nothing is merged).

The modes, each the exact repodata conda-lock builds for the same option, so the content
hash equals what ``conda-lock lock`` writes with it (``VirtualPackageOptions``):

- a spec file (flavor.toml ``virtual-packages``, ``--virtual-package-spec FILE``);
- ``with-cuda = "12.0"`` / ``--with-cuda 12.0``: conda-lock's defaults with ``__cuda=12.0``;
  ``"default"`` is conda-lock's own default (no flag at all: ``__cuda=11.4`` on Linux and
  Windows), for adopting a project locked by a plain ``conda-lock lock``;
- ``without-cuda`` / ``--without-cuda``, and lockdock's default: conda-lock's defaults
  *without* ``__cuda``, i.e. for linux-64 ``__unix=0``, ``__linux=5.10``, ``__glibc=2.28``,
  ``__archspec=1=x86_64`` (``aarch64``/``ppc64le`` on the other Linux platforms), for osx-*
  ``__unix``, ``__osx=11.0``, ``__archspec``, for win-64 ``__win``, ``__archspec``.

Why lockdock's default is ``--without-cuda`` and not conda-lock's: an image must not get
CUDA builds nobody asked for. With conda-lock's default ``__cuda``, conda-forge's solver
prefers the CUDA builds of pytorch & co. for every Linux lock, so a CPU image would carry
gigabytes of CUDA libraries; a CUDA flavor says so (``with-cuda`` or a spec file).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


#: ``with_cuda`` value meaning conda-lock's own default ``__cuda`` (a plain ``conda-lock lock``).
CONDA_LOCK_DEFAULT_CUDA = "default"


@dataclass(frozen=True)
class VirtualPackageOptions:
    """Which virtual packages a lock is solved and hashed with (one of three modes).

    ``with_cuda`` is a ``__cuda`` version, or ``"default"`` (conda-lock's default); neither
    it nor ``without_cuda`` nor a file: lockdock's default, conda-lock's ``--without-cuda``.
    """

    spec_file: Path | None = None
    with_cuda: str | None = None
    without_cuda: bool = False

    def __post_init__(self) -> None:
        given = [
            name
            for name, value in (
                ("--virtual-package-spec", self.spec_file is not None),
                ("--with-cuda", self.with_cuda is not None),
                ("--without-cuda", self.without_cuda),
            )
            if value
        ]
        if len(given) > 1:
            from lockdock.errors import UsageError

            raise UsageError(
                f"{' and '.join(given)} exclude each other: choose one way to give the "
                "virtual packages (conda-lock would silently ignore all but the spec file)."
            )
        if self.with_cuda is not None and not self.with_cuda.strip():
            from lockdock.errors import UsageError

            raise UsageError(
                "--with-cuda needs a version (e.g. 12.0), or `default` for conda-lock's "
                "default __cuda; use --without-cuda for none."
            )
        problem = None if self.with_cuda is None else with_cuda_problem(self.with_cuda)
        if problem is not None:
            from lockdock.errors import UsageError

            raise UsageError(
                f"--with-cuda {self.with_cuda!r} {problem}; give a __cuda version (e.g. 12.0), "
                "or `default` for conda-lock's default __cuda; use --without-cuda for none."
            )

    @property
    def given(self) -> bool:
        return self.spec_file is not None or self.with_cuda is not None or self.without_cuda

    @property
    def cuda_version(self) -> str:
        """conda-lock's ``cuda_version`` argument: a version, ``"default"`` or ``""`` (none)."""
        return self.with_cuda if self.with_cuda is not None else ""

    def conda_lock_options(self) -> str:
        """The ``conda-lock lock`` options that give the same virtual packages."""
        if self.spec_file is not None:
            return f"--virtual-package-spec {self.spec_file}"
        if self.with_cuda == CONDA_LOCK_DEFAULT_CUDA:
            return "(no option: conda-lock's default __cuda)"
        if self.with_cuda is not None:
            return f"--with-cuda {self.with_cuda}"
        return "--without-cuda"

    @classmethod
    def of_flavor(
        cls, flavor: Any, override: VirtualPackageOptions | None = None
    ) -> VirtualPackageOptions:
        """The flavor's settings (flavor.toml), replaced as a whole by CLI options if given."""
        if override is not None and override.given:
            return override
        return cls(
            spec_file=flavor.virtual_packages_file,
            with_cuda=getattr(flavor, "with_cuda", None),
            without_cuda=bool(getattr(flavor, "without_cuda", False)),
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
                parsed = _major_minor(package.version)
                if parsed is None:
                    raise SpecError(
                        f"{self.source}: __glibc version {package.version!r} is not "
                        "MAJOR.MINOR."
                    )
                return parsed
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


def _options(choice: Path | VirtualPackageOptions | None) -> VirtualPackageOptions:
    if isinstance(choice, VirtualPackageOptions):
        return choice
    return VirtualPackageOptions(spec_file=choice)


def hashing_repo(choice: Path | VirtualPackageOptions | None) -> FakeRepoData:
    """The FakeRepoData conda-lock builds for the same input: what the content hash covers.

    conda-lock: a spec file -> ``virtual_package_repo_from_specification(file)``; none ->
    ``default_virtual_package_repodata(cuda_version=with_cuda)`` with ``with_cuda`` a
    version, ``"default"`` (no flag) or ``""`` (``--without-cuda``, lockdock's default).
    A bare path (or None) is a spec file (or none).
    """
    options = _options(choice)
    virtual_packages_file = options.spec_file
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
    try:
        with _quiet_conda_lock():
            return default_virtual_package_repodata(cuda_version=options.cuda_version)
    except Exception as error:  # pydantic ValidationError for a malformed version
        raise SpecError(
            f"--with-cuda {options.with_cuda!r} is not a virtual-package version "
            f"(e.g. 12.0): {_one_line(error)}"
        ) from None


def load_virtual_packages(choice: Path | VirtualPackageOptions | None) -> VirtualPackageSet:
    """The virtual packages a flavor solves with (see the module docstring)."""
    options = _options(choice)
    return _repo_to_set(hashing_repo(options), options.spec_file)


def validate_virtual_packages_file(path: Path) -> None:
    """Fail with the file and line for malformed YAML or a misspelt structure."""
    from lockdock.textio import read_yaml

    try:
        data: Any = read_yaml(path)  # not UTF-8, malformed, duplicate keys: SpecError
    except FileNotFoundError:
        raise SpecError(f"{path}: no such virtual-package spec file.") from None
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
            problem = virtual_package_problem(name, version)
            if problem is None and name == "__glibc" and _major_minor(
                _split(version)[0]
            ) is None:
                problem = "has a version that is not MAJOR.MINOR (e.g. 2.28)"
            if problem is not None:
                raise SpecError(
                    f"{path}: `{name}: {version!r}` under {platform} {problem}; a value is "
                    '`VERSION` or `VERSION BUILD`, e.g. `__cuda: "12.6"`, '
                    '`__archspec: "1 x86_64"`.'
                )


def _split(value: str) -> tuple[str, str]:
    """``VERSION BUILD`` split as conda-lock splits it (at the first space)."""
    version, _, build = value.partition(" ")
    return version, build


def virtual_package_problem(name: str, value: str) -> str | None:
    """What py-rattler (the solver, see ``to_rattler``) would refuse in the virtual package
    ``name`` with ``value`` (``VERSION`` or ``VERSION BUILD``), as the end of a sentence
    about it; None when it would take it. conda-lock takes any string, so without this
    check a bad value reaches the solver (or only changes the content hash)."""
    from rattler import BuildString, PackageName, Version

    version, build = _split(value)
    for what, parse, text in (("name", PackageName, name), ("version", Version, version),
                              ("build string", BuildString, build)):  # fmt: skip
        if what == "build string" and not text:
            continue  # none: to_rattler gives "0"
        try:
            parse(text)
        except Exception as error:  # rattler's Invalid*Error, ValueError
            return f"has an invalid {what} ({_one_line(error)})"
    return None


def with_cuda_problem(value: str) -> str | None:
    """Why a ``with-cuda`` value (flavor.toml or ``--with-cuda``) is refused, as the end of
    a sentence; None for a version or ``"default"``."""
    if value == CONDA_LOCK_DEFAULT_CUDA:
        return None
    if not value.strip():
        return "is empty"
    return virtual_package_problem("__cuda", value)


def _major_minor(version: str) -> tuple[int, int] | None:
    """``(2, 28)`` of ``2.28`` (or ``2.28.x``, ``2``); None unless both are plain digits
    (``int()`` alone would read ``2_28`` as 228)."""
    parts = [*version.split("."), "0"][:2]
    if not all(part.isascii() and part.isdigit() for part in parts):
        return None
    return int(parts[0]), int(parts[1])


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
