"""The artifact store: every locked file, content-addressed and verified.

Layout: ``<store>/sha256/<sha256 hex>/<original file name>`` (default store:
``<project>/.lockdock/store``). The original name stays visible because conda and pip both
read meaning from it (``name-version-build.conda``, wheel tags).

Invariant: a file is only ever at its final path if its bytes matched the lock. Downloads go
to a temp file in the destination folder (name unique per process and thread), are hashed
while streaming, and are ``os.replace``-d into place only after sha256 (and md5 for conda
entries) match. ``os.replace`` is atomic on one file system, so concurrent ``fetch`` runs on
one store at worst download the same bytes twice; readers never see a partial file.

Standard library + PyYAML only at module top: the installer imports this inside image builds
from a base image's plain Python. That is also why downloads use ``urllib`` with a small
hand-written bounded retry instead of requests/urllib3's ``Retry``: neither is there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockdock.errors import IntegrityError, NetworkError
from lockdock.fsutil import file_digests, local_file_error
from lockdock.installer.lockfile import Lock, LockedArtifact, usable_filename

STORE_DIR = Path(".lockdock") / "store"
HASH_DIR = "sha256"
#: Entries pinned by md5 only (explicit locks, old conda-lock files): ``md5/<hex>/<name>``.
MD5_DIR = "md5"


def default_store(project_root: Path) -> Path:
    return Path(project_root) / STORE_DIR


def relative_path(artifact: LockedArtifact) -> str:
    """``sha256/<hex>/<file name>``: where ``artifact`` lives inside any store.

    A conda entry pinned by md5 alone (explicit locks, old conda-lock files) lives at
    ``md5/<hex>/<file name>``: still content-addressed by the one digest the lock gives.
    """
    if not artifact.sha256 and not (artifact.manager == "conda" and artifact.md5):
        raise IntegrityError(
            f"Lock entry {artifact.name} {artifact.version} ({artifact.manager}, "
            f"{artifact.platform}) has no sha256: lockdock stores and installs only "
            "hash-pinned artifacts. Re-lock with `lockdock lock`."
        )
    name = artifact.filename
    if not usable_filename(name):  # read_lock refuses these first (exit 3): a guard
        raise IntegrityError(
            f"Lock entry {artifact.name} {artifact.version}: its URL {artifact.url} has no "
            "usable file name."
        )
    if not artifact.sha256:
        return f"{MD5_DIR}/{(artifact.md5 or '').lower()}/{name}"
    return f"{HASH_DIR}/{artifact.sha256.lower()}/{name}"


def artifact_path(store: Path, artifact: LockedArtifact) -> Path:
    return Path(store) / relative_path(artifact)


def unique(artifacts: Iterable[LockedArtifact]) -> list[LockedArtifact]:
    """One artifact per store entry (the same file may be locked for several platforms)."""
    seen: dict[str, LockedArtifact] = {}
    for artifact in artifacts:
        seen.setdefault(relative_path(artifact), artifact)
    return [seen[key] for key in sorted(seen)]


def inventory(store: Path) -> frozenset[str]:
    """Relative paths (``sha256/<hex>/<name>``) of the finished files in ``store``.

    Temp files (hidden, ``*.part``) of running or interrupted downloads are not listed.
    """
    return frozenset(
        f"{kind}/{digest_dir.name}/{entry.name}"
        for kind, digest_dir in digest_dirs(store)
        for entry in digest_dir.iterdir()
        if not entry.name.startswith(".") and entry.is_file()
    )


def digest_dirs(store: Path) -> Iterator[tuple[str, Path]]:
    """``(sha256|md5, <store>/<kind>/<digest>/)`` for every digest folder of the store."""
    for kind in (HASH_DIR, MD5_DIR):
        root = Path(store) / kind
        if root.is_dir():
            yield from ((kind, d) for d in sorted(root.iterdir()) if d.is_dir())


def plan_fetch(
    artifacts: Iterable[LockedArtifact], present: frozenset[str] | set[str]
) -> list[LockedArtifact]:
    """The artifacts to download: one per store entry, those not in ``present``. Pure."""
    return [a for a in unique(artifacts) if relative_path(a) not in present]


def missing_from_store(artifacts: Iterable[LockedArtifact], store: Path) -> list[LockedArtifact]:
    return plan_fetch(artifacts, inventory(store))


def describe(artifact: LockedArtifact) -> str:
    return f"{artifact.name} {artifact.version} ({artifact.manager}, {artifact.filename})"


#: How many missing artifacts an error lists before it says "and N more".
MISSING_LISTED = 20


def list_missing(artifacts: Sequence[LockedArtifact]) -> str:
    """Missing artifacts for an error: one per line, sorted by name, the first 20 and a count.

    The one home of that format (``fetch --check``, ``install --offline``): a real lock
    misses hundreds of files, and one line of them in hash order is unreadable.
    """
    ordered = sorted(artifacts, key=lambda a: (a.name, a.version, a.platform, a.filename))
    lines = [f"  - {describe(a)}" for a in ordered[:MISSING_LISTED]]
    if len(ordered) > MISSING_LISTED:
        lines.append(f"  ... and {len(ordered) - MISSING_LISTED} more")
    return "\n".join(lines)


def expected_digests(artifact: LockedArtifact) -> dict[str, str]:
    """The digests the lock pins: sha256 and, for conda entries, md5 -- whichever it has.

    An entry with neither never gets here: ``relative_path`` refuses it first.
    """
    expected = {"sha256": artifact.sha256.lower()} if artifact.sha256 else {}
    if artifact.manager == "conda" and artifact.md5:
        expected["md5"] = artifact.md5.lower()
    if not expected:
        relative_path(artifact)  # raises IntegrityError naming the entry
    return expected


def mismatch_message(artifact: LockedArtifact, where: str, actual: dict[str, str]) -> str | None:
    """``None`` when ``actual`` matches the lock, else a sentence naming both hashes."""
    for algorithm, want in expected_digests(artifact).items():
        got = actual.get(algorithm)
        if got != want:
            return f"{describe(artifact)} at {where}: {algorithm} is {got}, the lock says {want}"
    return None


def verify_file(artifact: LockedArtifact, path: Path) -> str | None:
    """Hash ``path`` and compare with the lock; ``None`` when it matches, else the problem."""
    try:
        actual = file_digests(path, tuple(expected_digests(artifact)))
    except OSError as error:
        raise local_file_error(path, error, "read") from None
    return mismatch_message(artifact, str(path), actual)


def verify_artifacts(artifacts: Sequence[LockedArtifact], store: Path, *, jobs: int = 4) -> None:
    """Re-hash every artifact in the store; IntegrityError listing every mismatch.

    Missing files count as mismatches here: callers check presence first when they want
    the "missing" message instead.
    """
    entries = unique(artifacts)

    def check(artifact: LockedArtifact) -> str | None:
        path = artifact_path(store, artifact)
        if not path.is_file():
            return f"{describe(artifact)}: not in the store at {path}"
        return verify_file(artifact, path)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        problems = [p for p in pool.map(check, entries) if p]
    if problems:
        raise IntegrityError(
            f"{len(problems)} artifact(s) in store {store} do not match the lock: "
            + "; ".join(problems)
            + ". Delete those files and run `lockdock fetch` again; if the download "
            "itself differs, the lock or the upstream file changed."
        )


@dataclass(frozen=True)
class FetchReport:
    downloaded: tuple[LockedArtifact, ...]
    already_present: tuple[LockedArtifact, ...]
    replaced_corrupt: tuple[LockedArtifact, ...]

    @property
    def total(self) -> int:
        return len(self.downloaded) + len(self.already_present)


def fetch(
    artifacts: Iterable[LockedArtifact],
    store: Path,
    *,
    jobs: int = 4,
    verify_present: bool = True,
    opener: Callable[..., Any] | None = None,
) -> FetchReport:
    """Make every artifact present and verified in ``store``.

    Present files are re-hashed (``verify_present``); a corrupt one is deleted and
    downloaded again. Downloads run in ``jobs`` threads. Every failure is collected and
    reported in one error: IntegrityError if any download did not match the lock,
    NetworkError otherwise. Verified downloads are kept even when others fail, so a rerun
    resumes.
    """
    from lockdock.installer.download import (  # here: download.py imports this module
        DownloadFailure,
        download,
        open_url,
        progress_bar,
        remove_active_temps,
        sweep_dead_temps,
    )

    opener = opener or open_url
    store = Path(store)
    wanted = unique(artifacts)
    sweep_dead_temps(store)
    present = inventory(store)
    to_get = plan_fetch(wanted, present)
    already = [a for a in wanted if relative_path(a) in present]
    corrupt: list[LockedArtifact] = []
    if verify_present and already:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(lambda a: verify_file(a, artifact_path(store, a)), already))
        for artifact, problem in zip(already, results, strict=True):
            if problem:
                corrupt.append(artifact)
                try:
                    artifact_path(store, artifact).unlink(missing_ok=True)
                except OSError as error:
                    raise local_file_error(artifact_path(store, artifact), error,
                                           "replace the corrupt file") from None
        already = [a for a in already if a not in corrupt]
        to_get = sorted([*to_get, *corrupt], key=relative_path)

    failures: list[DownloadFailure] = []
    done: list[LockedArtifact] = []
    if to_get:
        with progress_bar(f"fetch {len(to_get)} artifact(s)") as bar:
            lock = threading.Lock()

            class _Locked:
                def advance(self, amount: float = 1) -> None:
                    with lock:
                        bar.advance(amount)

            stop = threading.Event()

            def get(artifact: LockedArtifact) -> LockedArtifact:
                download(artifact, store, progress=_Locked(), opener=opener, stop=stop)
                return artifact

            pool = ThreadPoolExecutor(max_workers=max(1, jobs))
            try:
                futures = [pool.submit(get, a) for a in to_get]
                for future in futures:
                    try:
                        done.append(future.result())
                    except DownloadFailure as failure:
                        failures.append(failure)
            except BaseException:
                # Ctrl-C or a local file-system error: stop every download at its next chunk,
                # start no new one, delete our temp files now and do not wait for threads
                # stuck in a read (the CLI exits without joining them).
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                remove_active_temps()
                raise
            pool.shutdown(wait=True)
    if failures:
        text = "; ".join(str(f) for f in failures)
        if any(f.integrity for f in failures):
            raise IntegrityError(
                f"{len(failures)} of {len(to_get)} download(s) into store {store} failed: "
                f"{text}. Nothing of a mismatching download was kept; check the lock "
                "(`lockdock lock --check`) or the upstream file."
            )
        raise NetworkError(
            f"{len(failures)} of {len(to_get)} download(s) into store {store} failed: "
            f"{text}. Verified downloads were kept: run `lockdock fetch` again to resume."
        )
    return FetchReport(tuple(done), tuple(already), tuple(corrupt))


def lock_artifacts(lock: Lock, platforms: Sequence[str] = ()) -> list[LockedArtifact]:
    """Every artifact of ``lock`` (all categories) for ``platforms`` (default: all of the lock's).

    Raises UsageError for a platform the lock does not have.
    """
    chosen = list(platforms) or list(lock.platforms)
    return [a for platform in chosen for a in lock.select(platform, sorted(lock.categories))]


def require_complete(artifacts: Sequence[LockedArtifact], store: Path) -> int:
    """``fetch --check``: the number of artifacts, or IntegrityError naming every missing one."""
    missing = missing_from_store(artifacts, store)
    if missing:
        raise IntegrityError(
            f"{len(missing)} artifact(s) missing from store {store} (run `lockdock fetch`):\n"
            + list_missing(missing)
        )
    return len(unique(artifacts))
