"""The installer: lock + store -> a prefix exactly equal to the lock, then verified.

Runs from a plain Python with only the standard library, PyYAML and py-rattler (inside an
image's builder stage)::

    python -m lockdock.installer.install conda-lock.yml --prefix /opt/conda/envs/lockdock \\
        --store /store --offline --platform linux-64

and through the CLI as ``lockdock install`` (same options).

Steps, in this order (nothing touches the prefix before step 3):

1. select the lock's entries for the platform and categories (py-rattler's ``LockFile``
   ignores conda-lock categories, so ``lockdock.installer.lockfile`` filters);
2. make sure the store holds every artifact (``--offline``: refuse, listing all missing ones;
   otherwise download them through ``lockdock.installer.store``) and re-hash every one of them
   (py-rattler does not verify ``file://`` packages);
3. install the conda part with ``rattler.install`` from ``file://`` records of the store,
   then the pip part with the new prefix's own interpreter (``pip install --no-deps
   --no-index --require-hashes``, wheels offered through a ``--find-links`` folder of the
   store's files so pip records ``name==version`` and no store path);
4. remove run-to-run noise and verify the prefix: conda-meta records and pip distributions
   are exactly the locked set by name, version (and build), nothing missing, nothing extra.

Interrupted installs: before writing anything the installer creates
``<prefix>/conda-meta/.lockdock-incomplete`` and removes it only after verification passed.
A rerun that finds the marker wipes the prefix and starts over (the prefix was ours and is
not usable), so a killed install always ends in the correct prefix after one rerun. This was
chosen over "install into a sibling and rename": conda packages and pip's entry points embed
the final prefix path, which a staging directory would have to fake.

Reproducibility: two installs of one lock into one prefix path give byte-identical trees.
conda-meta records are rewritten to name the lock's URL and channel instead of the store and
the (temporary, outside-the-prefix) rattler package cache; pip runs with no cache, no config
files and ``SOURCE_DATE_EPOCH`` set, so it writes checked-hash ``.pyc`` files (content only
depends on the source); every interpreter run uses ``PYTHONDONTWRITEBYTECODE``; the
wall-clock header lines of ``conda-meta/history`` are dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lockdock.errors import (
    INTERRUPTED_EXIT,
    InstallError,
    IntegrityError,
    LockdockError,
    UsageError,
)
from lockdock.installer.archive_checks import (
    channel_of,
    check_installed_links,
    conda_records,
)
from lockdock.installer.built import wheels_for_install
from lockdock.installer.lockfile import LockedArtifact
from lockdock.installer.pip_install import install_pip
from lockdock.installer.prefix import (
    CLOBBERS_DIR,
    CONDA_META,
    INCOMPLETE_MARKER,
    PREFIX_MARKER,
    PREFIX_MARKER_TEXT,
    PrefixDiff,
    PrefixState,
    _unwritable,
    classify_prefix,
    diff_prefix,
    locked_selection,
    owned_folders,
    prefix_lock,
    read_prefix,
    refuse_prefix,
    refuse_prefix_in_store,
    verify_prefix,
)
from lockdock.installer.prefix import (
    conda_records as installed_conda_records,
)
from lockdock.installer.store import (
    STORE_DIR,
    artifact_path,
    fetch,
    list_missing,
    missing_from_store,
    verify_artifacts,
)
from lockdock.installer.wheel_install import check_wheels
from lockdock.progress import say

if TYPE_CHECKING:
    from rattler.repo_data import RepoDataRecord

#: Test hook: ``LOCKDOCK_FAULT_KILL_AT=after-conda|after-pip`` SIGKILLs the installer there,
#: so the interrupted-install test kills it at a known point instead of racing a timer.
FAULT_ENV = "LOCKDOCK_FAULT_KILL_AT"
_HISTORY_HEADER = re.compile(r"^==> .* <==$")


# --- pure planning ---------------------------------------------------------------------


# --- reading a prefix ------------------------------------------------------------------


# --- acting on the prefix --------------------------------------------------------------


def _fault_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _python_version(records: Sequence[RepoDataRecord]) -> str | None:
    """``3.11`` for the lock's ``python`` package: where its wheels will go."""
    for record in records:
        if record.name.normalized == "python":
            return ".".join(str(record.version).split(".")[:2])
    return None


def _remove_emptied_folders(prefix: Path, folders: set[str]) -> None:
    """Remove each of ``folders`` (relative to ``prefix``) that is now empty, deepest first:
    rattler and pip leave the folders of the packages they remove (``__clobbers__/<name>``,
    ``share/<name>``), and the prefix must be the one an install from nothing makes."""
    for folder in sorted(folders, key=lambda f: f.count("/"), reverse=True):
        path = prefix / folder
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()


def _empty_folder(folder: Path) -> None:
    """Remove what ``folder`` holds, not the folder: it may be a mount point (the image
    builder's prefix is a cache mount)."""
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _sweep_stale_caches(prefix: Path) -> None:
    """Remove package caches left by killed installers of this prefix (their pid is gone)."""
    pattern = re.compile(rf"^\.{re.escape(prefix.name)}\.lockdock-cache\.(\d+)\.")
    with contextlib.suppress(OSError):
        for entry in prefix.parent.iterdir():
            match = pattern.match(entry.name)
            if not match:
                continue
            try:
                os.kill(int(match.group(1)), 0)
            except ProcessLookupError:
                shutil.rmtree(entry, ignore_errors=True)
            except PermissionError:
                pass


@contextlib.contextmanager
def _package_cache(prefix: Path) -> Iterator[Path]:
    """rattler's package cache, outside the prefix (beside it: hard links work), removed after."""
    try:
        cache = Path(
            tempfile.mkdtemp(
                prefix=f".{prefix.name}.lockdock-cache.{os.getpid()}.", dir=prefix.parent
            )
        )
    except OSError:
        cache = Path(tempfile.mkdtemp(prefix="lockdock-cache."))
    try:
        yield cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _install_conda(
    conda: Sequence[LockedArtifact], prefix: Path, records: Sequence[RepoDataRecord],
    platform: str, cache: Path,
) -> None:
    """py-rattler installs ``records`` (read from ``conda``'s archives) into ``prefix``."""
    from rattler import install as rattler_install
    from rattler.platform import Subdir

    from lockdock.progress import interactive

    async def run() -> None:
        await rattler_install(
            list(records),
            target_prefix=prefix,
            cache_dir=cache,
            platform=Subdir(platform),
            execute_link_scripts=False,
            show_progress=interactive(),
        )

    try:
        asyncio.run(run())
    except LockdockError:
        raise
    except Exception as error:  # rattler raises its own exception types
        raise InstallError(f"py-rattler could not install into {prefix}: {error}") from error


def _normalise_conda_meta(prefix: Path, conda: Sequence[LockedArtifact]) -> None:
    """Name the lock's URL/channel in conda-meta, drop cache paths and history timestamps,
    sort each record's paths, drop the empty folders of a clobber rattler did not move."""
    by_name = {a.name: a for a in conda}
    meta = prefix / CONDA_META
    for path in sorted(meta.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        artifact = by_name.get(record.get("name"))
        if artifact is None:
            continue
        record["url"] = artifact.url
        record["channel"] = channel_of(artifact.url)
        record.pop("extracted_package_dir", None)
        record.pop("package_tarball_full_path", None)
        record.pop("link", None)
        # rattler links packages in parallel: with a clobber, the order of a record's paths
        # is the order its files were linked in. Sorted, a record is a function of the lock.
        if isinstance(record.get("files"), list):
            record["files"] = sorted(record["files"])
        paths_data = record.get("paths_data")
        if isinstance(paths_data, dict) and isinstance(paths_data.get("paths"), list):
            paths_data["paths"] = sorted(paths_data["paths"], key=lambda e: str(e.get("_path")))
        text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    # ... and, with a clobber, sometimes leaves the folders of a move it did not make.
    clobbers = prefix / CLOBBERS_DIR
    if clobbers.is_dir():
        _remove_emptied_folders(prefix, {CLOBBERS_DIR} | {
            p.relative_to(prefix).as_posix() for p in clobbers.rglob("*") if p.is_dir()})
    history = meta / "history"
    if history.is_file():
        lines = history.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if not _HISTORY_HEADER.match(line.strip())]
        if kept != lines:
            history.write_text("".join(kept), encoding="utf-8")


@dataclass(frozen=True)
class InstallReport:
    prefix: Path
    platform: str
    conda: int
    pip: int
    fetched: int
    action: str
    #: Seconds per phase: verify-store, conda, pip, verify-prefix.
    seconds: Mapping[str, float] = field(default_factory=dict)


def install(
    lock_path: Path | str,
    prefix: Path | str,
    *,
    platform: str | None = None,
    categories: Sequence[str] = ("main",),
    store: Path | str | None = None,
    offline: bool = False,
    jobs: int = 4,
    force: bool = False,
    pyc_cache: Path | None = None,
) -> InstallReport:
    """Make ``prefix`` exactly the lock's environment for ``platform`` and ``categories``.

    Everything that can refuse (the lock, the target, the store, every archive's own
    metadata) is checked before the prefix is touched; then the prefix is locked
    (``prefix_lock``: a concurrent install into it fails fast) for the install itself.
    """
    lock_path = Path(lock_path)
    prefix = Path(os.path.abspath(prefix))
    store = Path(store) if store is not None else Path.cwd() / STORE_DIR
    platform, artifacts = locked_selection(lock_path, platform, categories)
    refuse_prefix_in_store(prefix, store)
    refuse_prefix(prefix, classify_prefix(prefix), force=force)

    missing = missing_from_store(artifacts, store)
    fetched = 0
    if missing and offline:
        raise IntegrityError(
            f"--offline and {len(missing)} artifact(s) of {lock_path} ({platform}) are not "
            f"in store {store} (run `lockdock fetch` where the network is reachable, or "
            f"drop --offline):\n{list_missing(missing)}"
        )
    if missing:
        say(f"fetching {len(missing)} artifact(s) into {store}")
        fetched = len(fetch(missing, store, jobs=jobs, verify_present=False).downloaded)
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    verify_artifacts(artifacts, store, jobs=jobs)
    conda = [a for a in artifacts if a.manager == "conda"]
    pip = wheels_for_install([a for a in artifacts if a.manager == "pip"], store, lock_path)
    verify_artifacts([a for a in pip if a not in artifacts], store, jobs=jobs)  # built wheels

    # The lock beside the prefix first (an unwritable target fails here, before py-rattler
    # runs); the prefix itself is touched only after every archive was checked.
    try:
        prefix.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unwritable(prefix, error) from None
    with prefix_lock(prefix):
        records = conda_records(conda, store)
        check_wheels([artifact_path(store, a) for a in pip], prefix, _python_version(records))
        seconds["verify-store"] = time.perf_counter() - clock
        state = classify_prefix(prefix)  # again: another install may have run meanwhile
        refuse_prefix(prefix, state, force=force)
        return _install_locked(lock_path, prefix, platform, categories, store, state,
                               records, conda, pip, fetched, seconds, pyc_cache)


def _install_locked(
    lock_path: Path, prefix: Path, platform: str, categories: Sequence[str], store: Path,
    state: PrefixState, records: Sequence[RepoDataRecord], conda: Sequence[LockedArtifact],
    pip: Sequence[LockedArtifact], fetched: int, seconds: dict[str, float],
    pyc_cache: Path | None = None,
) -> InstallReport:
    if state == "interrupted":
        say(f"{prefix} is an interrupted install: emptying it and starting over")
        _empty_folder(prefix)
        _sweep_stale_caches(prefix)
    try:
        (prefix / CONDA_META).mkdir(parents=True, exist_ok=True)
        (prefix / CONDA_META / INCOMPLETE_MARKER).write_text(
            f"lockdock install of {lock_path} in progress (pid {os.getpid()})\n",
            encoding="utf-8",
        )
        (prefix / CONDA_META / PREFIX_MARKER).write_text(PREFIX_MARKER_TEXT, encoding="utf-8")
    except OSError as error:
        raise _unwritable(prefix, error) from None
    # An install into a prefix that holds another lock: the folders its packages' files are in,
    # to remove those the removals leave empty (an install from nothing has none).
    kept_folders = owned_folders(prefix) if state == "conda" else set()
    say(f"installing {len(conda)} conda package(s) into {prefix}")
    with _package_cache(prefix) as cache:
        clock = time.perf_counter()
        _install_conda(conda, prefix, records, platform, cache)
    check_installed_links(prefix, installed_conda_records(prefix))
    _normalise_conda_meta(prefix, conda)
    seconds["conda"] = time.perf_counter() - clock
    _fault_point("after-conda")
    if pip:
        say(f"installing {len(pip)} pip wheel(s) with {prefix}/bin/python")
        clock = time.perf_counter()
        install_pip(pip, prefix, store, pyc_cache)
        seconds["pip"] = time.perf_counter() - clock
    _fault_point("after-pip")
    _remove_emptied_folders(prefix, kept_folders)
    (prefix / CONDA_META / INCOMPLETE_MARKER).unlink()
    clock = time.perf_counter()
    try:
        verify_prefix(lock_path, prefix, platform, categories)
        seconds["verify-prefix"] = time.perf_counter() - clock
    except IntegrityError:
        (prefix / CONDA_META / INCOMPLETE_MARKER).write_text(
            "lockdock install finished but the prefix does not match the lock\n",
            encoding="utf-8",
        )
        raise
    say(f"{prefix}: {len(conda)} conda + {len(pip)} pip package(s), verified against the lock")
    return InstallReport(prefix, platform, len(conda), len(pip), fetched, state, seconds)


# --- command line (stdlib argparse: runs without click/rich) ----------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lockdock.installer.install",
        description="Install a conda-lock.yml into a prefix from a hash-verified store, "
        "then verify the prefix equals the lock.",
    )
    parser.add_argument("lockfile", type=Path)
    parser.add_argument("--prefix", type=Path, required=True)
    parser.add_argument("--platform", default=None, help="conda subdir (default: this machine)")
    parser.add_argument(
        "--store", type=Path, default=None, help=f"artifact store (default: ./{STORE_DIR})"
    )
    parser.add_argument("--offline", action="store_true", help="never download")
    parser.add_argument(
        "--category",
        action="append",
        dest="categories",
        default=None,
        help="lock category to install (repeatable; default: main)",
    )
    parser.add_argument(
        "--verify-only",
        action="store_true",
        help="do not install: check that the prefix equals the lock",
    )
    parser.add_argument("--jobs", type=int, default=4, help="parallel downloads / hashes")
    parser.add_argument(
        "--pyc-cache",
        type=Path,
        default=None,
        help="folder of compiled pycs per wheel, reused across installs (the image builder's "
        "cache mount; lockdock.installer.pyc_cache)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="install into an existing conda prefix lockdock did not create (its packages "
        "not in the lock are removed)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    categories = args.categories or ["main"]
    try:
        if args.verify_only:
            verify_prefix(args.lockfile, args.prefix, args.platform, categories)
            say(f"{args.prefix} matches {args.lockfile}")
        else:
            install(
                args.lockfile,
                args.prefix,
                platform=args.platform,
                categories=categories,
                store=args.store,
                offline=args.offline,
                jobs=args.jobs,
                force=args.force,
                pyc_cache=args.pyc_cache,
            )
    except LockdockError as error:
        print(f"lockdock: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        from lockdock.installer.download import remove_active_temps

        remove_active_temps()
        print("lockdock: interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(INTERRUPTED_EXIT)  # download threads stuck in a read are not waited for
    return 0


__all__ = [
    "InstallReport",
    "PrefixDiff",
    "UsageError",
    "classify_prefix",
    "diff_prefix",
    "install",
    "main",
    "read_prefix",
    "verify_prefix",
]

if __name__ == "__main__":
    sys.exit(main())
