"""Lock: environment files -> ``conda-lock.yml`` per flavor, solved with py-rattler and uv.

Flow for one flavor (``lock_project``):

1. plan (pure, offline): validate the flavor's environment files and virtual-package
   spec, build conda-lock's own ``LockSpecification`` from them (``make_lock_spec``, with
   the PyPI mapping shipped in ``lockdock/data`` so nothing is downloaded) and its content
   hash per platform (conda-lock's ``compute_content_hashes``), the conda match specs and
   ``pip:`` requirements per platform;
2. per platform (``lockdock.solve``, the network edge): fetch repodata (py-rattler
   ``Gateway``), solve the conda part (``rattler.solve``) with the flavor's virtual
   packages, resolve the ``pip:`` part with uv (``lockdock.pip_resolve``) against the
   solved Python, treating conda-provided Python distributions as installed;
3. once every flavor is solved, write each ``conda-lock.yml`` with conda-lock's
   ``write_conda_lock_file`` into a temp directory beside the lock, then ``os.replace``
   them all: on any failure every old lock stays.

``check_locks`` is the offline half: no solve, only content hashes compared the way
``conda-lock lock --check-input-hash`` compares them.

Channels are resolved through ``lockdock.mirrors.Mirrors`` (``--mirror NAME=URL`` /
``LOCKDOCK_MIRRORS``), re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from lockdock import progress
from lockdock.errors import LocalFileError, SpecError, StaleLockError
from lockdock.mirrors import Mirrors
from lockdock.spec import Flavor, Project, validate_environment_file
from lockdock.textio import read_text
from lockdock.virtual_packages import (
    KNOWN_PLATFORMS,
    VirtualPackageOptions,
    VirtualPackageSet,
    hashing_repo,
    load_virtual_packages,
)

if TYPE_CHECKING:
    from conda_lock.models.lock_spec import LockSpecification

    from lockdock.installer.lockfile import Lock
    from lockdock.solve import LockResult, SolvedFlavor


def mapping_url() -> str:
    """The shipped PyPI<->conda name mapping, as a local path conda-lock accepts."""
    return str(resources.files("lockdock") / "data" / "pypi-conda-mapping.json")


# --- plan (pure, offline) -----------------------------------------------------------------


@dataclass(frozen=True)
class PlatformPlan:
    platform: str
    conda_specs: tuple[str, ...]
    pip_requirements: tuple[str, ...]
    content_hash: str


@dataclass(frozen=True)
class FlavorPlan:
    flavor: Flavor
    lock_spec: LockSpecification
    virtual_packages: VirtualPackageSet
    channels: tuple[str, ...]  # as written in the environment files
    platforms: tuple[PlatformPlan, ...]
    #: Channels named only in ``channel::package`` specs, after ``channels:`` (lowest
    #: priority, as conda adds them); solved from and listed in the lock's metadata.
    spec_channels: tuple[str, ...] = ()
    #: Extra pip indexes: flavor.toml ``pip-indexes``, then ``pip-repositories:``.
    pip_indexes: tuple[str, ...] = ()
    allow_pypi: bool = True

    @property
    def solve_channels(self) -> tuple[str, ...]:
        return (*self.channels, *self.spec_channels)

    @property
    def content_hashes(self) -> dict[str, str]:
        return {p.platform: p.content_hash for p in self.platforms}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


#: conda-lock's logger for platform selectors: one warning per filtered line and platform.
SELECTOR_LOGGER = "conda_lock.src_parser.selectors"


class _SelectorCount(logging.Filter):
    """Swallows conda-lock's per-line selector warnings, counting them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("filtered out line"):
            self.count += 1
            return False
        return True


@contextlib.contextmanager
def _selector_summary(what: str | None) -> Iterator[None]:
    """One line for all of conda-lock's "filtered out line ... selector" warnings (none for
    ``what=None``: a second pass over lines already summarised)."""
    counter = _SelectorCount()
    logger = logging.getLogger(SELECTOR_LOGGER)
    logger.addFilter(counter)
    try:
        yield
    finally:
        logger.removeFilter(counter)
        if counter.count and what is not None:
            progress.say(
                f"{what}: {counter.count} line(s) left out on some platform by their "
                "`# [selector]` (as conda-lock does)"
            )


def _refuse_unsupported_sources(flavor: Flavor) -> None:
    seen: set[Path] = set()
    for path in flavor.environment_files:
        if path.name == "pyproject.toml" or path.suffix == ".toml":
            raise SpecError(
                f"{path}: pyproject.toml sources are not supported (flavor {flavor.name!r}); "
                "lockdock locks environment.yml files. Move the `[tool.conda-lock]` "
                "dependencies into an environment.yml and list that instead."
            )
        resolved = path.resolve()
        if resolved in seen:
            raise SpecError(
                f"{path} is listed twice among the sources of flavor {flavor.name!r}: "
                "each file merges once, in -f order (a flavor's parent chain already "
                "includes its parents' files)."
            )
        seen.add(resolved)


def lock_specification(flavor: Flavor) -> LockSpecification:
    """conda-lock's LockSpecification for the flavor's environment files (validated first).

    Any number of files, merged as ``conda-lock -f a -f b -f c`` merges them (later files
    override earlier ones by package name; each file's ``category:`` is kept); the flavor's
    ``platforms`` (flavor.toml) win over the files' ``platforms:``, as ``-p`` does.
    """
    _refuse_unsupported_sources(flavor)
    for path in flavor.environment_files:
        validate_environment_file(path, KNOWN_PLATFORMS)
    from conda_lock.src_parser import make_lock_spec

    overrides = list(getattr(flavor, "platforms", ()) or ()) or None
    try:
        with _selector_summary(f"flavor {flavor.name}"):
            spec = make_lock_spec(
                src_files=list(flavor.environment_files),
                platform_overrides=overrides,
                mapping_url=mapping_url(),
            )
    except Exception as error:  # conda-lock raises ValueError/RuntimeError/pydantic errors
        files = ", ".join(str(p) for p in flavor.environment_files)
        raise SpecError(
            f"conda-lock cannot read the environment files of flavor {flavor.name!r} "
            f"({files}): {_one_line(error)}"
        ) from None
    unknown = [p for p in spec.platforms if p not in KNOWN_PLATFORMS]
    if unknown:  # no `platforms:` at all gives conda-lock's defaults; all known
        raise SpecError(
            f"Unknown platform {', '.join(unknown)} for flavor {flavor.name!r}; lockdock "
            f"locks {', '.join(KNOWN_PLATFORMS)}."
        )
    return spec


def _content_hashes(
    spec: LockSpecification, vpkgs: VirtualPackageOptions | Path | None
) -> dict[str, str]:
    from conda_lock.content_hash import compute_content_hashes

    return dict(compute_content_hashes(spec, hashing_repo(vpkgs)))


def _pip_requirements(flavor: Flavor, platform: str) -> tuple[str, ...]:
    """The ``pip:`` strings of every environment file, later files overriding by name."""
    import yaml
    from conda_lock.src_parser.selectors import filter_platform_selectors
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    by_name: dict[str, str] = {}
    for path in flavor.environment_files:
        content = read_text(path)
        with _selector_summary(None):  # lock_specification said it once already
            lines = list(filter_platform_selectors(content, platform=platform))
        data = yaml.safe_load("\n".join(lines))
        for item in (data or {}).get("dependencies") or ():
            if isinstance(item, dict) and item.get("pip"):
                for requirement in item["pip"]:
                    name = canonicalize_name(Requirement(requirement).name)
                    by_name.pop(name, None)
                    by_name[name] = requirement
    return tuple(by_name.values())


def _conda_specs(spec: LockSpecification, platform: str, mirrors: Mirrors) -> tuple[str, ...]:
    from conda_lock.conda_solver import _to_match_spec
    from conda_lock.models.lock_spec import VersionedDependency

    specs: list[str] = []
    for dep in spec.dependencies[platform]:
        if dep.manager != "conda":
            continue
        if not isinstance(dep, VersionedDependency):
            raise SpecError(f"Conda dependency {dep.name!r} must be a versioned match spec.")
        body = _to_match_spec(dep.name, dep.version, dep.build, None)
        if dep.conda_channel:
            channel, subdir = split_channel_subdir(dep.conda_channel)
            where = mirrors.resolve(channel) + (f"/{subdir}" if subdir else "")
            body = f"{where}::{body}"
        specs.append(body)
    return tuple(sorted(specs))


def split_channel_subdir(channel: str) -> tuple[str, str | None]:
    """``bodo.ai/linux-64`` -> (``bodo.ai``, ``linux-64``); ``pytorch`` -> (``pytorch``, None)."""
    head, _, tail = channel.rstrip("/").rpartition("/")
    if head and tail in (*KNOWN_PLATFORMS, "noarch"):
        return head, tail
    return channel.rstrip("/"), None


def spec_channels(spec: LockSpecification) -> tuple[str, ...]:
    """Channels named in ``channel::package`` specs but not in ``channels:``, in file order.

    conda adds such a channel at the lowest priority (that is how conda-lock locked the
    project); the solver must see it, or ``pytorch::pytorch`` reads as "no candidates".
    """
    listed = {c.url.rstrip("/") for c in spec.channels}
    found: dict[str, None] = {}
    for platform in spec.platforms:
        for dep in spec.dependencies[platform]:
            channel = getattr(dep, "conda_channel", None)
            if dep.manager == "conda" and channel:
                name, _ = split_channel_subdir(channel)
                if name not in listed:
                    found.setdefault(name)
    return tuple(found)


def plan_flavor(
    flavor: Flavor,
    mirrors: Mirrors | None = None,
    virtual_packages: VirtualPackageOptions | None = None,
) -> FlavorPlan:
    """Everything needed to lock ``flavor`` that can be known offline.

    ``virtual_packages`` (CLI ``--with-cuda``/``--without-cuda``/``--virtual-package-spec``)
    replaces the flavor's own virtual-package setting when given.
    """
    mirrors = mirrors or Mirrors()
    spec = lock_specification(flavor)
    options = VirtualPackageOptions.of_flavor(flavor, virtual_packages)
    vpkgs = load_virtual_packages(options)
    hashes = _content_hashes(spec, options)
    platforms = []
    for platform in spec.platforms:
        vpkgs.for_platform(platform)  # a spec file must cover every platform locked
        platforms.append(
            PlatformPlan(
                platform=platform,
                conda_specs=_conda_specs(spec, platform, mirrors),
                pip_requirements=_pip_requirements(flavor, platform),
                content_hash=hashes[platform],
            )
        )
    if any(p.pip_requirements for p in platforms):  # refuse an unusable index before solving
        from lockdock.pip_resolve import index_options

        index_options(
            (*getattr(flavor, "pip_indexes", ()), *(r.url for r in spec.pip_repositories)),
            spec.allow_pypi_requests,
        )
    return FlavorPlan(
        flavor=flavor,
        lock_spec=spec,
        virtual_packages=vpkgs,
        channels=tuple(c.url for c in spec.channels),
        platforms=tuple(platforms),
        spec_channels=spec_channels(spec),
        pip_indexes=(
            *getattr(flavor, "pip_indexes", ()),
            *(r.url for r in spec.pip_repositories),
        ),
        allow_pypi=spec.allow_pypi_requests,
    )


# --- check (offline) ----------------------------------------------------------------------


@dataclass(frozen=True)
class StaleLock:
    flavor: str
    platform: str | None  # None: the whole lock (missing or unreadable)
    lock_path: Path
    reason: str

    def __str__(self) -> str:
        where = f"{self.flavor}/{self.platform}" if self.platform else self.flavor
        return f"{where} ({self.lock_path}): {self.reason}"


def check_flavor(
    flavor: Flavor, virtual_packages: VirtualPackageOptions | None = None,
    *, lock: Lock | None = None,
) -> list[StaleLock]:
    """Stale platforms of one flavor's lock; [] when it matches its inputs.

    The same comparison as ``conda-lock lock --check-input-hash`` with the same virtual
    packages (the flavor's, or ``virtual_packages`` from the command line).
    """
    from conda_lock.content_hash import backwards_compatible_content_hashes

    from lockdock.installer.lockfile import lock_exists, read_lock

    spec = lock_specification(flavor)
    if lock is None and not lock_exists(flavor.lock_path):
        return [StaleLock(flavor.name, None, flavor.lock_path, "no lock file")]
    try:
        lock = lock or read_lock(flavor.lock_path)  # given: the command already read it
    except StaleLockError as error:  # a malformed lock is its own error (exit 3), not stale
        return [StaleLock(flavor.name, None, flavor.lock_path, f"unreadable: {error}")]
    repo = hashing_repo(VirtualPackageOptions.of_flavor(flavor, virtual_packages))
    stale: list[StaleLock] = []
    for platform in spec.platforms:
        recorded = lock.content_hash.get(platform)
        if recorded is None:
            stale.append(StaleLock(flavor.name, platform, flavor.lock_path, "not locked"))
        elif recorded not in backwards_compatible_content_hashes(spec, repo, platform):
            stale.append(
                StaleLock(
                    flavor.name, platform, flavor.lock_path,
                    "inputs changed since it was locked (content hash differs)",
                )
            )  # fmt: skip
    for platform in lock.platforms:
        if platform not in spec.platforms:
            stale.append(
                StaleLock(flavor.name, platform, flavor.lock_path, "no longer in `platforms:`")
            )
    return stale


def check_locks(
    project: Project,
    flavors: Sequence[str] = (),
    virtual_packages: VirtualPackageOptions | None = None,
    *, locks: Mapping[str, Lock] | None = None,
) -> list[StaleLock]:
    """Offline: which locks of ``flavors`` (default: all) do not match their inputs
    (``locks``: locks the command already read, by flavor)."""
    stale: list[StaleLock] = []
    for flavor in project.select(flavors):
        stale.extend(check_flavor(flavor, virtual_packages,
                                  lock=(locks or {}).get(flavor.name)))
    return stale


def require_fresh_locks(
    project: Project,
    flavors: Sequence[str] = (),
    virtual_packages: VirtualPackageOptions | None = None,
    *, locks: Mapping[str, Lock] | None = None,
) -> None:
    """Raise StaleLockError naming every stale flavor and platform (``lock --check``)."""
    stale = check_locks(project, flavors, virtual_packages, locks=locks)
    if stale:
        raise StaleLockError(
            "Stale lock: " + "; ".join(str(s) for s in stale) + ". Run `lockdock lock"
            + "".join(f" {f}" for f in dict.fromkeys(s.flavor for s in stale))
            + "` to re-lock."
        )


def lock_write_error(flavor: Flavor, error: OSError) -> LocalFileError:
    from lockdock.fsutil import local_file_error

    return local_file_error(flavor.lock_path, error, f"write the lock of flavor {flavor.name!r} to")


def check_lock_target(flavor: Flavor) -> None:
    """Refuse a lock path that cannot be written before anything is solved (a solve can take
    minutes): ``fsutil.probe_writable``."""
    from lockdock.fsutil import probe_writable

    try:
        probe_writable(flavor.lock_path)
    except OSError as error:
        raise lock_write_error(flavor, error) from None


def lock_project(
    project: Project,
    flavors: Sequence[str] = (),
    mirrors: Mirrors | None = None,
    cache_dir: Path | None = None,
    virtual_packages: VirtualPackageOptions | None = None,
) -> list[LockResult]:
    """Lock ``flavors`` (default: all), all or nothing: every flavor is planned and the cache
    and lock paths checked before any solve (a bad input fails before anything is fetched),
    and every flavor is solved before any lock is written (a flavor that cannot be solved
    leaves the other flavors' locks as they were)."""
    from lockdock.solve import default_cache_dir, make_gateway, solve_flavor, write_locks

    mirrors = mirrors or Mirrors()
    selected = project.select(flavors)
    plans = [plan_flavor(f, mirrors, virtual_packages) for f in selected]
    gateway = make_gateway(cache_dir or default_cache_dir(project))  # probes the cache
    for flavor in selected:
        check_lock_target(flavor)

    async def run() -> list[SolvedFlavor]:
        return [await solve_flavor(gateway, plan, mirrors) for plan in plans]

    return write_locks(asyncio.run(run()))


def lock_command(
    project_dir: Path,
    flavors: Sequence[str],
    mirror_options: Sequence[str],
    check: bool,
    virtual_packages: VirtualPackageOptions | None = None,
) -> list[LockResult]:
    """What ``lockdock lock`` and ``nox -s lock`` run."""
    from lockdock.spec import load_project

    project = load_project(project_dir)
    if not project.flavors:
        raise SpecError(
            f"Project {project.root} has no flavor: create images/cpu/Dockerfile (the "
            "default flavor, locked into ./conda-lock.yml) or another images/<flavor>/."
        )
    mirrors = Mirrors.from_sources(mirror_options, os.environ)  # refused even with --check
    if check:
        require_fresh_locks(project, flavors, virtual_packages)
        return []
    return lock_project(project, flavors, mirrors, virtual_packages=virtual_packages)
