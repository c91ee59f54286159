"""A prefix, judged: what it holds (conda-meta records, pip distributions), whether it is
exactly the lock (``verify_prefix``), whether lockdock made it, and the lock that keeps two
installs out of one prefix.

Reading and comparing are pure or read-only; ``prefix_lock`` is the one edge (a lock file
beside the prefix, ``fcntl`` fail-fast: a second install exits 8 naming the holder's pid).
Part of the installer: standard library, PyYAML and py-rattler only.
"""

from __future__ import annotations

import contextlib
import email.parser
import errno
import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lockdock.errors import InstallError, IntegrityError
from lockdock.installer.lockfile import LockedArtifact, read_lock

INCOMPLETE_MARKER = ".lockdock-incomplete"


#: ``conda-meta/.lockdock-prefix``: this prefix was created by ``lockdock install``, so a
#: rerun may bring it to another lock (removing packages). A conda prefix without it (a
#: Miniconda base, someone's env) is refused unless ``--force``: bringing it to the lock
#: deletes its own packages.
PREFIX_MARKER = ".lockdock-prefix"


PREFIX_MARKER_TEXT = "created by lockdock install: `lockdock install` may replace its packages\n"


CONDA_META = "conda-meta"


def canonical_pip_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_versions_match(locked: str, installed: str) -> bool:
    """Equal, or the lock names the public part of a local version (``2.13.0`` ~ ``2.13.0+cpu``,
    which is also what pip's ``==2.13.0`` accepts)."""
    locked, installed = locked.strip().lower(), installed.strip().lower()
    if locked == installed:
        return True
    return "+" not in locked and installed.split("+", 1)[0] == locked


@dataclass(frozen=True)
class PrefixDiff:
    """How an installed prefix differs from the locked set (empty lists: identical)."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing: {', '.join(self.missing)}")
        if self.extra:
            parts.append(f"not in the lock: {', '.join(self.extra)}")
        if self.different:
            parts.append(f"different: {', '.join(self.different)}")
        return "; ".join(parts)


def diff_prefix(
    locked: Sequence[LockedArtifact],
    conda_installed: Mapping[str, tuple[str, str]],
    pip_installed: Mapping[str, str],
) -> PrefixDiff:
    """Compare the locked artifacts with what a prefix holds. Pure.

    ``conda_installed``: name -> (version, build) from conda-meta; ``pip_installed``:
    canonical name -> version of the distributions pip installed (not conda's).
    """
    diff = PrefixDiff()
    conda_locked = {a.name: a for a in locked if a.manager == "conda"}
    pip_locked = {canonical_pip_name(a.name): a for a in locked if a.manager == "pip"}
    for name, artifact in sorted(conda_locked.items()):
        have = conda_installed.get(name)
        want = (artifact.version, artifact.build or "")
        if have is None:
            diff.missing.append(f"{name} {want[0]} {want[1]} (conda)")
        elif have != want:
            diff.different.append(
                f"{name} (conda): installed {have[0]} {have[1]}, locked {want[0]} {want[1]}"
            )
    for name, (version, build) in sorted(conda_installed.items()):
        if name not in conda_locked:
            diff.extra.append(f"{name} {version} {build} (conda)")
    for name, artifact in sorted(pip_locked.items()):
        found = pip_installed.get(name)
        if found is None:
            diff.missing.append(f"{artifact.name} {artifact.version} (pip)")
        elif not pip_versions_match(artifact.version, found):
            diff.different.append(
                f"{artifact.name} (pip): installed {found}, locked {artifact.version}"
            )
    for name, pip_version in sorted(pip_installed.items()):
        if name not in pip_locked:
            diff.extra.append(f"{name} {pip_version} (pip)")
    return diff


PrefixState = str  # "absent" | "empty" | "interrupted" | "conda" | "foreign"


def classify_prefix(prefix: Path) -> PrefixState:
    """What is at ``prefix`` now: decides create, wipe-and-redo, update, or refuse."""
    if not prefix.exists() and not prefix.is_symlink():
        return "absent"
    if not prefix.is_dir():
        return "foreign"
    if (prefix / CONDA_META / INCOMPLETE_MARKER).exists():
        return "interrupted"
    if (prefix / CONDA_META).is_dir():
        return "conda"
    if not any(prefix.iterdir()):
        return "empty"
    return "foreign"


def lockdock_made(prefix: Path) -> bool:
    return (prefix / CONDA_META / PREFIX_MARKER).is_file()


def refuse_prefix(prefix: Path, state: PrefixState, *, force: bool) -> None:
    """InstallError when ``prefix`` is not lockdock's to change. Pure (reads the prefix)."""
    if state == "foreign":
        raise InstallError(
            f"Refusing to install into {prefix}: it exists and is not a conda prefix (no "
            "conda-meta/). Choose an empty or new directory, or remove it yourself."
        )
    if state == "conda" and not force and not lockdock_made(prefix):
        raise InstallError(
            f"Refusing to install into {prefix}: it is a conda prefix that lockdock did not "
            f"create (no conda-meta/{PREFIX_MARKER}), and bringing it to the lock would remove "
            "its own packages. Choose a new directory, or pass --force to replace its "
            "packages with the lock's."
        )


def refuse_prefix_in_store(prefix: Path, store: Path) -> None:
    """InstallError when ``prefix`` is (inside) the artifact store or holds it: the store is
    content-addressed archives only (image builds mount it as the lock's artifacts), and
    emptying an interrupted prefix would delete a store inside it."""
    real_prefix, real_store = Path(os.path.realpath(prefix)), Path(os.path.realpath(store))
    if real_prefix == real_store or real_store in real_prefix.parents:
        raise InstallError(
            f"Refusing to install into {prefix}: it is inside the artifact store {store}, "
            "which holds only the lock's archives by hash. Choose a prefix outside the store."
        )
    if real_prefix in real_store.parents:
        raise InstallError(
            f"Refusing to install into {prefix}: the artifact store {store} is inside it (an "
            "interrupted install empties its prefix). Keep the store outside the prefix."
        )


def locked_selection(
    lock_path: Path, platform: str | None, categories: Sequence[str]
) -> tuple[str, list[LockedArtifact]]:
    chosen = platform or current_platform()
    lock = read_lock(lock_path)
    artifacts = lock.select(chosen, categories or ("main",))
    # pip sdists are fine here: verifying reads names and versions only, and install()
    # puts the wheel `lockdock fetch` built from each (lockdock.installer.built) in its place.
    unknown = [a for a in artifacts if a.manager not in ("conda", "pip")]
    if unknown:
        raise InstallError(
            f"Lock {lock_path} has entries of unknown manager(s): "
            f"{', '.join(sorted({a.manager for a in unknown}))}."
        )
    return chosen, artifacts


def current_platform() -> str:
    from rattler.platform import Subdir

    return str(Subdir.current())


@dataclass(frozen=True)
class PrefixContents:
    conda: dict[str, tuple[str, str]]
    pip: dict[str, str]
    incomplete: bool


def conda_records(prefix: Path) -> list[tuple[Path, dict[str, object]]]:
    """(record file, record) of every ``conda-meta/*.json``, by file name."""
    meta = prefix / CONDA_META
    records = []
    for path in sorted(meta.glob("*.json")) if meta.is_dir() else ():
        try:
            records.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as error:
            raise IntegrityError(
                f"Prefix {prefix}: unreadable conda record {path}: {error}."
            ) from None
    return records


def conda_listed_files(records: Sequence[tuple[Path, Mapping[str, object]]]) -> set[str]:
    return {str(f) for _, r in records for f in r.get("files") or []}  # type: ignore[attr-defined]


def site_packages_dirs(prefix: Path) -> list[Path]:
    return sorted(p for p in prefix.glob("lib/python3*/site-packages") if p.is_dir())


@dataclass(frozen=True)
class PipDistribution:
    """A ``*.dist-info`` that no conda record lists: pip (or uv) installed it."""

    dist_info: Path
    name: str | None  # canonical; None when it has no METADATA
    version: str | None

    def listed(self, prefix: Path) -> list[str] | None:
        """The paths (relative to ``prefix``) its ``RECORD`` lists; None without one."""
        record = self.dist_info / "RECORD"
        if not record.is_file():
            return None
        base = self.dist_info.parent.relative_to(prefix).as_posix()
        names = (line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
                 for line in record.read_text(encoding="utf-8").splitlines())  # fmt: skip
        return [f"{base}/{name}" for name in names if name]


def pip_distributions(prefix: Path, conda_files: set[str]) -> list[PipDistribution]:
    parser = email.parser.HeaderParser()
    found = []
    for site in site_packages_dirs(prefix):
        for dist_info in sorted(site.glob("*.dist-info")):
            metadata = dist_info / "METADATA"
            if metadata.relative_to(prefix).as_posix() in conda_files:
                continue  # a conda package's own dist-info
            if not metadata.is_file():
                found.append(PipDistribution(dist_info, None, None))
                continue
            headers = parser.parsestr(metadata.read_text(encoding="utf-8", errors="replace"))
            found.append(PipDistribution(dist_info, canonical_pip_name(str(headers["Name"])),
                                         str(headers["Version"])))  # fmt: skip
    return found


#: Where rattler moves the file of a conda package that another package's file overwrote
#: (``__clobbers__/<package>/<path>``; the record lists the moved path).
CLOBBERS_DIR = "__clobbers__"


def owned_folders(prefix: Path) -> set[str]:
    """Every folder (relative, the prefix itself not) above a file that a conda record or a
    pip ``RECORD`` lists: where removing packages can leave empty folders behind."""
    records = conda_records(prefix)
    listed = [f for _, r in records for f in r.get("files") or []]  # type: ignore[attr-defined]
    for dist in pip_distributions(prefix, conda_listed_files(records)):
        listed += dist.listed(prefix) or []
    folders: set[str] = set()
    for path in listed:
        folder = os.path.dirname(str(path))
        while folder and folder not in folders:
            folders.add(folder)
            folder = os.path.dirname(folder)
    return folders


def read_prefix(prefix: Path) -> PrefixContents:
    """Installed conda records and pip distributions (dist-infos no conda record owns)."""
    records = conda_records(prefix)
    conda = {str(r["name"]): (str(r["version"]), str(r["build"])) for _, r in records}
    pip = {d.name: str(d.version) for d in pip_distributions(prefix, conda_listed_files(records))
           if d.name is not None}  # fmt: skip
    incomplete = (prefix / CONDA_META / INCOMPLETE_MARKER).exists()
    return PrefixContents(conda=conda, pip=pip, incomplete=incomplete)


def verify_prefix(
    lock_path: Path | str,
    prefix: Path | str,
    platform: str | None = None,
    categories: Sequence[str] = ("main",),
) -> PrefixContents:
    """Raise IntegrityError unless ``prefix`` holds exactly the locked packages.

    Reads conda-meta and dist-info metadata only (no interpreter is run), so it also checks
    a prefix of another platform.
    """
    prefix = Path(prefix)
    platform, artifacts = locked_selection(Path(lock_path), platform, categories)
    if not (prefix / CONDA_META).is_dir():
        raise IntegrityError(f"{prefix} is not a conda prefix (no conda-meta/): nothing to verify.")
    contents = read_prefix(prefix)
    if contents.incomplete:
        raise IntegrityError(
            f"Prefix {prefix} is an interrupted install (conda-meta/{INCOMPLETE_MARKER} is "
            f"there): rerun `lockdock install {lock_path} --prefix {prefix}`."
        )
    diff = diff_prefix(artifacts, contents.conda, contents.pip)
    if not diff.ok:
        raise IntegrityError(
            f"Prefix {prefix} is not the lock {lock_path} ({platform}, categories "
            f"{', '.join(categories)}): {diff.describe()}."
        )
    return contents


def _lock_path_for(prefix: Path) -> Path:
    return prefix.parent / f".{prefix.name}.lockdock-lock"


@contextlib.contextmanager
def prefix_lock(prefix: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``prefix`` (``.<name>.lockdock-lock`` beside it, removed
    after) or fail fast: a second install into one prefix is refused, naming the pid that
    holds it, rather than waiting behind it (or racing it into a corrupt prefix).

    The lock file is unlinked on release; an acquirer that finds its file unlinked under it
    retries on the new one, so two processes never both believe they hold the lock.
    """
    path = _lock_path_for(prefix)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise _unwritable(prefix, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise InstallError(
                f"Another lockdock install (pid {holder}) is installing into {prefix} right "
                f"now (it holds {path}). lockdock never installs into one prefix twice at "
                "once: wait for it to finish, then rerun."
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder released and unlinked it between our open and flock
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _unwritable(prefix: Path, error: OSError) -> InstallError:
    reason = {errno.EROFS: "a read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied", errno.ENOSPC: "no space left"}.get(
                  error.errno or 0, error.strerror or str(error))
    return InstallError(
        f"Cannot install into {prefix}: {error.filename or prefix} is not writable ({reason}). "
        "Choose a prefix in a writable directory."
    )
