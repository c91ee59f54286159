"""The solve half of ``lockdock lock`` (edge: network): repodata, py-rattler, uv, the writer.

``lockdock.lock`` plans a flavor offline (``FlavorPlan``); this module turns one plan into
``conda-lock.yml``: per platform, fetch repodata (py-rattler ``Gateway``), solve the conda
part with the flavor's virtual packages, resolve the ``pip:`` part with uv against the solved
Python (conda-provided Python distributions count as installed), assign categories as
conda-lock does. ``write_locks`` then writes every solved flavor's lock with conda-lock's
writer into a temp directory beside it and ``os.replace``-s them all: on any failure every
old lock stays.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockdock import progress
from lockdock.errors import LockdockError, NetworkError, SolveError, SpecError
from lockdock.fsutil import local_file_error
from lockdock.lock import FlavorPlan, PlatformPlan, _one_line, lock_write_error, mapping_url
from lockdock.mirrors import MIRRORS_ENV, Mirrors
from lockdock.virtual_packages import to_rattler
from lockdock.workspace import Workspace

if TYPE_CHECKING:
    from conda_lock.lockfile.v2prelim.models import LockedDependency
    from conda_lock.models.lock_spec import LockSpecification

    from lockdock.spec import Project


@dataclass
class Timings:
    """Seconds spent per phase, summed over platforms (for the benchmark and --verbose)."""

    repodata: float = 0.0
    solve: float = 0.0
    pip: float = 0.0
    write: float = 0.0


@dataclass(frozen=True)
class LockResult:
    flavor: str
    lock_path: Path
    counts: dict[str, tuple[int, int]]  # platform -> (conda, pip)
    timings: Timings


def _channel_error(error: BaseException, plan: FlavorPlan, mirrors: Mirrors) -> NetworkError:
    text = _one_line(error)
    named = [c for c in plan.solve_channels if mirrors.resolve(c) in text] or list(
        plan.solve_channels
    )
    listing = ", ".join(f"{c!r} ({mirrors.resolve(c)})" for c in named)
    return NetworkError(
        f"Channel {listing} could not be reached while locking flavor "
        f"{plan.flavor.name!r}: {text.rstrip('.')}.",
        hint=(
            f"Point the channel at a reachable mirror with `lockdock lock --mirror "
            f"{named[0]}=URL` or {MIRRORS_ENV}='{named[0]}=URL'."
        ),
    )


def _is_solver_error(error: BaseException) -> bool:
    from rattler.exceptions import SolverError

    return isinstance(error, SolverError)


def _is_fetch_error(error: BaseException) -> bool:
    from rattler.exceptions import FetchRepoDataError, GatewayError, IoError

    return isinstance(error, FetchRepoDataError | GatewayError | IoError | OSError)


def _unexpected(error: BaseException, plan: FlavorPlan, platform: str) -> LockdockError:
    return LockdockError(
        f"Locking flavor {plan.flavor.name!r} for {platform} failed: "
        f"{type(error).__name__}: {_one_line(error)}"
    )


def _match_specs(plan: FlavorPlan, platform_plan: PlatformPlan) -> list[Any]:
    """Lenient parsing, as validation and conda read specs (``hello 1.0`` is ``==1.0``)."""
    import rattler

    result = []
    for spec in platform_plan.conda_specs:
        try:
            result.append(rattler.MatchSpec(spec, strict=False))
        except Exception as error:
            files = ", ".join(str(p) for p in plan.flavor.environment_files)
            raise SpecError(
                f"Invalid match spec {spec!r} (from {files}): {_one_line(error)}."
            ) from None
    return result


async def _solve_platform(
    gateway: Any, plan: FlavorPlan, platform_plan: PlatformPlan, mirrors: Mirrors,
    timings: Timings,
) -> list[Any]:  # fmt: skip
    import rattler

    platform = platform_plan.platform
    sources = [rattler.Channel(mirrors.resolve(c)) for c in plan.solve_channels]
    subdirs: list[Any] = [platform, "noarch"]
    name = plan.flavor.name
    specs = _match_specs(plan, platform_plan)
    started = time.perf_counter()
    with progress.status(f"{name}/{platform}: fetching repodata"):
        try:
            await gateway.query(sources, subdirs, specs, recursive=True)
        except Exception as error:
            if _is_fetch_error(error):
                raise _channel_error(error, plan, mirrors) from None
            raise _unexpected(error, plan, platform) from None
    timings.repodata += time.perf_counter() - started
    started = time.perf_counter()
    with progress.status(f"{name}/{platform}: solving {len(specs)} specs"):
        try:
            records = await rattler.solve(
                sources=sources,
                specs=specs,
                gateway=gateway,
                platforms=subdirs,
                virtual_packages=to_rattler(plan.virtual_packages.for_platform(platform)),
            )
        except Exception as error:
            if _is_solver_error(error):
                vpkgs = ", ".join(map(str, plan.virtual_packages.for_platform(platform)))
                raise SolveError(
                    f"The conda specs of flavor {name!r} cannot be satisfied on {platform} "
                    f"(virtual packages: {vpkgs}; channels: {', '.join(plan.solve_channels)}). "
                    f"Solver: {_one_line(error)}"
                ) from None
            if _is_fetch_error(error):
                raise _channel_error(error, plan, mirrors) from None
            raise _unexpected(error, plan, platform) from None
    timings.solve += time.perf_counter() - started
    return list(records)


def _record_dependencies(depends: Sequence[str]) -> dict[str, str]:
    """``depends`` strings -> ``{name: version spec}`` exactly as conda-lock writes them."""
    from conda_lock._vendor.conda.models.match_spec import MatchSpec

    grouped: dict[str, list[Any]] = {}
    for dep in depends:
        spec = MatchSpec(dep)  # type: ignore[no-untyped-call]
        grouped.setdefault(spec.name, []).append(spec)
    result: dict[str, str] = {}
    for dep_name, specs in grouped.items():
        merged = specs[0] if len(specs) == 1 else MatchSpec.merge(specs)[0]  # type: ignore[no-untyped-call]
        result[dep_name] = merged.version.spec_str if merged.version is not None else ""
    return result


def _conda_entries(records: Sequence[Any], platform: str) -> dict[str, LockedDependency]:
    from conda_lock.lockfile.v2prelim.models import HashModel, LockedDependency

    entries: dict[str, LockedDependency] = {}
    for record in records:
        if record.md5 is None or record.sha256 is None:
            raise SolveError(
                f"Package {record.url} has no md5/sha256 in its channel's repodata: the "
                "lock needs both (re-index the channel)."
            )
        entries[record.name.normalized] = LockedDependency(
            name=record.name.normalized,
            version=str(record.version),
            manager="conda",
            platform=platform,
            dependencies=_record_dependencies(list(record.depends)),
            url=record.url,
            hash=HashModel(md5=record.md5.hex(), sha256=record.sha256.hex()),
            categories=set(),
        )
    return entries


def _python_distributions(records: Sequence[Any]) -> list[Any]:
    """Conda records that install a Python distribution, as ProvidedDistribution."""
    import json

    from conda_lock.lookup import conda_name_to_pypi_name

    from lockdock.pip_resolve import ProvidedDistribution

    provided: list[ProvidedDistribution] = []
    for record in records:
        name = record.name.normalized
        if name == "python":
            continue
        depends_on_python = any(d.split()[0] == "python" for d in record.depends if d.split())
        purls = json.loads(record.to_json()).get("purls") or []
        pypi = [p for p in purls if str(p).startswith("pkg:pypi/")]
        if pypi:
            pypi_name = str(pypi[0])[len("pkg:pypi/") :].split("@")[0].split("?")[0]
        elif depends_on_python or record.noarch.python:
            pypi_name = conda_name_to_pypi_name(name, mapping_url=mapping_url())
        else:
            continue
        provided.append(ProvidedDistribution(pypi_name, str(record.version)))
    return provided


def _pip_entries(
    plan: FlavorPlan, platform_plan: PlatformPlan, records: Sequence[Any], timings: Timings
) -> dict[str, LockedDependency]:
    from conda_lock.lockfile.v2prelim.models import HashModel, LockedDependency

    from lockdock.pip_resolve import PipTarget, resolve_pip

    platform = platform_plan.platform
    if not platform_plan.pip_requirements:
        return {}
    python = [r for r in records if r.name.normalized == "python"]
    if not python:
        raise SolveError(
            f"Flavor {plan.flavor.name!r} has a `pip:` list but its conda solution for "
            f"{platform} has no `python`: add python to `dependencies:`."
        )
    osx = plan.virtual_packages.version_of(platform, "__osx")
    target = PipTarget(
        platform=platform,
        python_version=str(python[0].version),
        glibc=plan.virtual_packages.glibc(platform),
        osx=tuple(int(x) for x in osx.split(".")[:2]) if osx else None,  # type: ignore[arg-type]
    )
    started = time.perf_counter()
    with progress.status(f"{plan.flavor.name}/{platform}: resolving pip requirements"):
        packages = resolve_pip(
            platform_plan.pip_requirements, target, _python_distributions(records),
            indexes=plan.pip_indexes, allow_pypi=plan.allow_pypi,
        )  # fmt: skip
    timings.pip += time.perf_counter() - started
    return {
        p.name: LockedDependency(
            name=p.name,
            version=p.version,
            manager="pip",
            platform=platform,
            dependencies=p.dependencies,
            url=p.url,
            hash=HashModel(sha256=p.sha256),
            categories=set(),
        )
        for p in packages
    }


def _assign_categories(
    spec: LockSpecification,
    platform: str,
    conda: dict[str, LockedDependency],
    pip: dict[str, LockedDependency],
) -> None:
    """Categories as conda-lock assigns them (``main`` unless a file says ``category:``)."""
    from conda_lock.lockfile import apply_categories
    from packaging.utils import canonicalize_name

    requested_conda = {
        d.name: d for d in spec.dependencies[platform] if d.manager == "conda" and d.name in conda
    }
    apply_categories(requested=requested_conda, planned=conda, mapping_url=mapping_url())
    # pip: each root request's category flows to everything it reaches in the pip graph.
    for dep in spec.dependencies[platform]:
        if dep.manager != "pip":
            continue
        todo = [str(canonicalize_name(dep.name))]
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen or name not in pip:
                continue
            seen.add(name)
            pip[name].categories.add(dep.category)
            todo.extend(pip[name].dependencies)
    for entry in [*conda.values(), *pip.values()]:
        if not entry.categories or "main" in entry.categories:
            entry.categories = {"main"}


@dataclass(frozen=True)
class SolvedFlavor:
    """One flavor solved, not yet written."""

    plan: FlavorPlan
    packages: tuple[LockedDependency, ...]
    counts: dict[str, tuple[int, int]]  # platform -> (conda, pip)
    timings: Timings


async def solve_flavor(gateway: Any, plan: FlavorPlan, mirrors: Mirrors) -> SolvedFlavor:
    timings = Timings()
    packages: list[LockedDependency] = []
    counts: dict[str, tuple[int, int]] = {}
    for platform_plan in plan.platforms:
        records = await _solve_platform(gateway, plan, platform_plan, mirrors, timings)
        conda = _conda_entries(records, platform_plan.platform)
        pip = _pip_entries(plan, platform_plan, records, timings)
        _assign_categories(plan.lock_spec, platform_plan.platform, conda, pip)
        packages.extend(conda.values())
        packages.extend(pip.values())
        counts[platform_plan.platform] = (len(conda), len(pip))
    return SolvedFlavor(plan, tuple(packages), counts, timings)


def _lockfile(plan: FlavorPlan, packages: Sequence[LockedDependency]) -> Any:
    from conda_lock.common import relative_path
    from conda_lock.lockfile.v2prelim.models import Lockfile, LockMeta
    from conda_lock.models.channel import Channel

    lock_path = plan.flavor.lock_path
    sources = [relative_path(lock_path.parent, Path(s)) for s in plan.lock_spec.sources]
    return Lockfile(
        package=list(packages),
        metadata=LockMeta(
            content_hash=plan.content_hashes,
            channels=[
                *plan.lock_spec.channels,
                *(Channel.from_string(c) for c in plan.spec_channels),
            ],
            platforms=list(plan.lock_spec.platforms),
            sources=sources,
        ),
    )


def _stage_lock(solved: SolvedFlavor, scratch: Path) -> Path:
    """The lock written with conda-lock's writer into ``scratch`` (same name, other folder:
    the writer names the file in its help text), synced to disk."""
    from conda_lock.lockfile import write_conda_lock_file

    lock_path = solved.plan.flavor.lock_path
    started = time.perf_counter()
    with progress.status(f"{solved.plan.flavor.name}: writing {lock_path}"):
        staged = scratch / lock_path.name
        write_conda_lock_file(
            _lockfile(solved.plan, solved.packages), staged, metadata_choices=None
        )
        with staged.open("rb") as handle:
            os.fsync(handle.fileno())
    solved.timings.write += time.perf_counter() - started
    return staged


def write_locks(solved: Sequence[SolvedFlavor]) -> list[LockResult]:
    """Write every lock or none: each is staged in a temp folder beside its target first (a
    full or read-only folder fails here, before any lock changed), then each is renamed into
    place; if a rename still fails, the locks already replaced get their old file back
    (kept as a hard link in the temp folder)."""
    scratches: list[Path] = []
    try:
        staged: list[tuple[SolvedFlavor, Path]] = []  # flavor, its staged lock
        for item in solved:
            try:
                item.plan.flavor.lock_path.parent.mkdir(parents=True, exist_ok=True)
                scratches.append(Path(tempfile.mkdtemp(
                    prefix=f".{item.plan.flavor.lock_path.name}.",
                    dir=item.plan.flavor.lock_path.parent,
                )))  # fmt: skip
                staged.append((item, _stage_lock(item, scratches[-1])))
            except OSError as error:
                raise lock_write_error(item.plan.flavor, error) from None
        replaced: list[tuple[Path, Path | None]] = []  # target, its old file
        for item, file in staged:
            lock_path = item.plan.flavor.lock_path
            previous = file.parent / "previous" if os.path.lexists(lock_path) else None
            try:
                if previous is not None:
                    os.link(lock_path, previous, follow_symlinks=False)
                os.replace(file, lock_path)
            except OSError as error:
                _restore(replaced)
                raise lock_write_error(item.plan.flavor, error) from None
            replaced.append((lock_path, previous))
    finally:
        for scratch in scratches:
            shutil.rmtree(scratch, ignore_errors=True)
    return [
        LockResult(item.plan.flavor.name, item.plan.flavor.lock_path, item.counts, item.timings)
        for item in solved
    ]


def _restore(replaced: Sequence[tuple[Path, Path | None]]) -> None:
    for lock_path, previous in reversed(replaced):
        with contextlib.suppress(OSError):
            if previous is None:
                os.unlink(lock_path)
            else:
                os.replace(previous, lock_path)


def make_gateway(cache_dir: Path) -> Any:
    import rattler

    try:  # rattler reports an unwritable cache as a fetch error: "channel unreachable"
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".lockdock-probe."):
            pass
    except OSError as error:
        raise local_file_error(cache_dir, error, "write the repodata cache") from None
    return rattler.Gateway(cache_dir=cache_dir)


def default_cache_dir(project: Project) -> Path:
    return Workspace(project.root).rattler_cache
