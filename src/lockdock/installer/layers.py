"""The splitter: a verified prefix -> ``/layers/00 .. /layers/NN``, one tree per image layer.

Runs in the builder stage right after the install verified the prefix
(images/base/build/install-env)::

    python -m lockdock.installer.layers --prefix /opt/conda/envs/lockdock --out /layers

Which file goes where is ``lockdock.installer.layer_plan`` (pure; its docstring is the rule).
Here: read the owners' lists (conda-meta records, pip ``RECORD`` files), walk the prefix,
and write each slot as ``<out>/NN/<prefix without the leading />/...``:

- files are hard links to the prefix's (no copy; the prefix is not shipped, only /layers is),
  or copies where the prefix file already had other links (its time must be its own) or the
  prefix is on another file system (the builder's prefix is a cache mount); symlinks are
  recreated; directories get the prefix's mode;
- every entry gets its owner's time (``layer_plan.clamp``), every directory
  ``STABLE_EPOCH``: BuildKit's ``COPY --link`` keeps them, so a layer's bytes are a function
  of its packages' files alone;
- the split report (``layer_plan.REPORT_PATH``, in the shared slot) names each slot's packages and
  sizes, for ``lockdock inspect``;
- last, the slots are checked against the prefix: every file and symlink exactly once, same
  inode (or a copy with the sha256 the prefix's manifest has), mode and target; every
  directory present with its mode. Any failure is a BuildError (exit 10) naming the files,
  and nothing is left in ``--out``.

Standard library only (it runs in the installer venv).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lockdock.errors import BuildError, LockdockError
from lockdock.fsutil import sha256_file, write_fixed_time_tree
from lockdock.installer.layer_plan import (
    MIB,
    REPORT_PATH,
    SHARE_DIR,
    SHARED_SLOT,
    SLOTS,
    SOLO_MIN_BYTES,
    STABLE_EPOCH,
    Owner,
    assign_owners,
    clamp,
    plan_parts,
    plan_slots,
    slot_dir,
)
from lockdock.installer.prefix import (
    CONDA_META,
    conda_listed_files,
    conda_records,
    pip_distributions,
)
from lockdock.installer.prefix_manifest import (
    Walked,
    in_batches,
    manifest_lines,
    manifest_sha256,
    prefix_manifest_sha256,
    walk,
)
from lockdock.textio import source_date_epoch

#: How many paths an error message lists before "and N more".
LISTED = 20


def _listing(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:LISTED])
    return shown + (f" and {len(paths) - LISTED} more" if len(paths) > LISTED else "")


# --- reading the owners ------------------------------------------------------------------


@dataclass(frozen=True)
class Owners:
    owners: dict[str, Owner]
    conda: dict[str, list[str]]  # key -> listed paths (the record file included)
    pip: dict[str, list[str]]


def read_owners(prefix: Path) -> Owners:
    """Every conda record's file list and every pip-installed distribution's RECORD."""
    owners: dict[str, Owner] = {}
    conda: dict[str, list[str]] = {}
    pip: dict[str, list[str]] = {}
    records = conda_records(prefix)
    for record_path, record in records:
        try:
            owner = Owner("conda", str(record["name"]), str(record["version"]),
                          str(record.get("build", "")), _timestamp(record.get("timestamp")))
        except KeyError as error:
            raise BuildError(
                f"Layer split of {prefix}: conda record {record_path} has no {error}."
            ) from None
        owners[owner.key] = owner
        files = [str(f) for f in record.get("files") or []]  # type: ignore[attr-defined]
        conda[owner.key] = [*files, f"{CONDA_META}/{record_path.name}"]
    for dist in pip_distributions(prefix, conda_listed_files(records)):
        listed = dist.listed(prefix)
        if dist.name is None or dist.version is None or listed is None:
            raise BuildError(
                f"Layer split of {prefix}: pip distribution {dist.dist_info} has no RECORD or "
                "METADATA, so its files cannot be attributed to it."
            )
        owner = Owner("pip", dist.name, dist.version)
        owners[owner.key] = owner
        pip.setdefault(owner.key, []).extend(listed)
    return Owners(owners, conda, pip)


def _timestamp(value: object) -> int | None:
    try:
        return int(value) if value is not None else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


# --- writing the slots --------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """What was put where (the report's content)."""

    slots: dict[int, list[str]]  # slot -> owner keys
    placed: dict[str, int]  # path -> slot
    owner: dict[str, str | None]  # path -> owner key (None: shared)
    sizes: dict[str, int]  # owner key -> installed bytes
    shared: list[str]
    slot_bytes: list[int]  # slot -> installed bytes of its packages' files (parts: theirs)
    slot_files: list[int]  # slot -> its packages' files and symlinks


def plan_split(
    prefix: Path, *, solo_min_bytes: int = SOLO_MIN_BYTES
) -> tuple[Split, Owners, Walked]:
    owners = read_owners(prefix)
    entries, directories = walk(prefix)
    ownership = assign_owners(entries, owners.conda, owners.pip)
    if ownership.unowned:
        raise BuildError(
            f"Layer split of {prefix}: {len(ownership.unowned)} file(s) belong to no conda "
            f"package or pip distribution and are not on the list of known leftovers "
            f"(lockdock.installer.layer_plan.UNOWNED_FILES): {_listing(ownership.unowned)}."
        )
    sizes = {key: 0 for key in owners.owners}
    for path, key in ownership.owner.items():
        if key is not None:
            sizes[key] += entries[path].st_size
    slots_of = plan_slots(sizes, solo_min_bytes=solo_min_bytes)
    slots: dict[int, list[str]] = {s: [] for s in range(SLOTS)}
    for key in sorted(slots_of):
        for slot in slots_of[key]:
            slots[slot].append(key)
    files_of: dict[str, dict[str, int]] = {key: {} for key, own in slots_of.items()
                                           if len(own) > 1}  # fmt: skip
    for path, key in ownership.owner.items():
        if key in files_of:
            files_of[key][path] = entries[path].st_size
    part_of = {path: part for key, files in files_of.items()
               for path, part in plan_parts(files, len(slots_of[key])).items()}  # fmt: skip
    placed = {path: SHARED_SLOT if key is None else slots_of[key][part_of.get(path, 0)]
              for path, key in ownership.owner.items()}  # fmt: skip
    slot_bytes, slot_files = [0] * SLOTS, [0] * SLOTS
    for path, key in ownership.owner.items():
        if key is not None:
            slot_bytes[placed[path]] += entries[path].st_size
            slot_files[placed[path]] += 1
    split = Split(slots, placed, ownership.owner, sizes, ownership.shared,
                  slot_bytes, slot_files)  # fmt: skip
    return split, owners, (entries, directories)


def _place(source: str, dest: str, info: os.stat_result, when: int, link: bool) -> None:
    """``dest`` := ``source``: a symlink recreated, a file hard-linked (``link``, and no other
    links: its time must be its own) or copied; then the time ``when``."""
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), dest)
    elif not link or info.st_nlink > 1:
        _copy(source, dest, info)
    else:
        try:
            os.link(source, dest, follow_symlinks=False)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            _copy(source, dest, info)
    os.utime(dest, (when, when), follow_symlinks=False)


def _copy(source: str, dest: str, info: os.stat_result) -> None:
    """Bytes and mode (what the manifest and the layer hold), in the fewest system calls:
    ``shutil.copy2``'s stat, xattr and flag calls cost more than a small file's bytes, and
    a torch prefix is 20,000 small files."""
    if info.st_size >= 1 << 20:
        shutil.copyfile(source, dest)  # sendfile
    else:
        with open(source, "rb") as handle:
            data = handle.read()
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    os.chmod(dest, stat.S_IMODE(info.st_mode))


def _make_dirs(root: str, slot_root: str, rel_dir: str, made: set[str]) -> None:
    """Create ``slot_root/rel_dir`` and its parents with the modes of ``root/rel_dir``."""
    missing = []
    current = rel_dir
    while current and os.path.join(slot_root, current) not in made:
        missing.append(current)
        current = os.path.dirname(current)
    for part in reversed(missing):
        target = os.path.join(slot_root, part)
        with contextlib.suppress(FileExistsError):
            os.mkdir(target)
        os.chmod(target, stat.S_IMODE(os.stat(os.path.join(root, part)).st_mode))
        made.add(target)


def write_slots(
    prefix: Path,
    out: Path,
    *,
    root: Path = Path("/"),
    source_date_epoch: int | None = None,
    solo_min_bytes: int = SOLO_MIN_BYTES,
) -> Split:
    """Split ``prefix`` into ``out/00 .. out/NN`` (replacing ``out``), check, report."""
    prefix, root = Path(os.path.abspath(prefix)), Path(os.path.abspath(root))
    try:
        inside = prefix.relative_to(root)
    except ValueError:
        raise BuildError(f"Layer split: prefix {prefix} is not under the root {root}.") from None
    split, owners, (entries, directories) = plan_split(prefix, solo_min_bytes=solo_min_bytes)
    jobs = os.cpu_count() or 1
    lines = manifest_lines(prefix, (entries, directories), jobs=jobs)
    if out.exists():
        shutil.rmtree(out)
    try:
        _write(prefix, out, root, inside, split, owners, entries, directories,
               source_date_epoch, manifest_sha256(lines), jobs)  # fmt: skip
        check_slots(prefix, out, inside, entries, directories, lines, jobs)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return split



def _write(
    prefix: Path, out: Path, root: Path, inside: Path, split: Split, owners: Owners,
    entries: dict[str, os.stat_result], directories: dict[str, os.stat_result],
    source_date_epoch: int | None, manifest: str, jobs: int,
) -> None:  # fmt: skip
    """Folders first, in order; then the files over ``jobs`` threads: a prefix on another
    file system than ``out`` (the builder's cache mount) is copied, 1.2 GB for torch."""
    made: set[str] = set()
    for slot in range(SLOTS):
        (out / slot_dir(slot)).mkdir(parents=True)
    times = {key: clamp(owner.timestamp, source_date_epoch) for key, owner in owners.owners.items()}
    shared_time = clamp(None, source_date_epoch)
    held: set[str] = set()
    top, base = os.fspath(prefix), os.fspath(root)
    inner = "" if inside == Path(".") else inside.as_posix() + "/"
    slot_roots = {slot: os.fspath(out / slot_dir(slot)) for slot in range(SLOTS)}
    placements: list[tuple[str, str, os.stat_result, int]] = []
    for path in sorted(entries):
        slot_root = slot_roots[split.placed[path]]
        rel = inner + path
        _make_dirs(base, slot_root, os.path.dirname(rel), made)
        key = split.owner[path]
        placements.append((os.path.join(top, path), os.path.join(slot_root, rel), entries[path],
                           times[key] if key else shared_time))  # fmt: skip
        parent = os.path.dirname(path)
        while parent and parent not in held:
            held.add(parent)
            parent = os.path.dirname(parent)
    link = os.stat(top).st_dev == os.stat(out).st_dev  # else: copies, not failed links first
    in_batches(placements, lambda placement: _place(*placement, link), jobs)
    for directory in sorted(directories):
        if directory not in held:  # nothing owned below it: the shared slot keeps it
            _make_dirs(base, slot_roots[SHARED_SLOT], inner + directory, made)
    # The report's folders are the image's (/usr/share/...), not the prefix's: 0755.
    report = out / slot_dir(SHARED_SLOT) / REPORT_PATH
    for part in reversed(Path(REPORT_PATH).parents[:-1]):
        report_dir = out / slot_dir(SHARED_SLOT) / part
        report_dir.mkdir(exist_ok=True)
        os.chmod(report_dir, 0o755)
        made.add(os.fspath(report_dir))
    report.write_text(report_json(split, owners, prefix, manifest), encoding="utf-8")
    os.chmod(report, 0o644)
    os.utime(report, (shared_time, shared_time))
    dir_time = clamp(None, source_date_epoch)
    for folder in sorted(made, key=lambda p: p.count("/"), reverse=True):
        os.utime(folder, (dir_time, dir_time))


def report_json(split: Split, owners: Owners, prefix: Path, manifest_sha256: str) -> str:
    """The split report: per slot its packages, files and installed bytes. Deterministic."""
    slots = []
    for slot in range(SLOTS):
        keys = split.slots[slot]
        slots.append({
            "slot": slot_dir(slot),
            "packages": [_describe(owners.owners[k]) for k in keys],
            "files": split.slot_files[slot],
            "installed_bytes": split.slot_bytes[slot],
        })  # fmt: skip
    shared = slots[SHARED_SLOT]
    shared["shared_paths"] = list(split.shared)
    data = {"format": 1, "prefix": str(prefix), "prefix_manifest_sha256": manifest_sha256,
            "slots": slots}
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def _describe(owner: Owner) -> dict[str, str]:
    described = {"manager": owner.manager, "name": owner.name, "version": owner.version}
    if owner.build:
        described["build"] = owner.build
    return described


# --- the check after the split -------------------------------------------------------------


def check_slots(
    prefix: Path,
    out: Path,
    inside: Path,
    entries: dict[str, os.stat_result],
    directories: dict[str, os.stat_result],
    lines: dict[str, str],
    jobs: int = 1,
) -> None:
    """Every entry of the prefix exactly once across the slots, equal to the prefix's: a
    hard link to the prefix's file, or a copy whose sha256 is the one ``lines`` (the
    prefix's manifest) has."""
    seen: dict[str, list[str]] = {}
    copies: list[tuple[str, str, str]] = []  # (relative path, slot, the copy's path)
    dirs_seen: set[str] = set()
    problems: list[str] = []
    source_top = os.fspath(prefix)
    for slot in range(SLOTS):
        top = out / slot_dir(slot) / inside
        if not top.is_dir():
            continue
        found, found_dirs = walk(top)
        slot_top = os.fspath(top)
        dirs_seen.update(found_dirs)
        for rel, info in found.items():
            seen.setdefault(rel, []).append(slot_dir(slot))
            want = entries.get(rel)
            if want is None:
                problems.append(f"{rel} (slot {slot_dir(slot)}: not in the prefix)")
            elif not _same(os.path.join(source_top, rel), os.path.join(slot_top, rel), want, info):
                problems.append(f"{rel} (slot {slot_dir(slot)}: differs from the prefix)")
            elif stat.S_ISREG(want.st_mode) and (want.st_ino, want.st_dev) != (info.st_ino,
                                                                             info.st_dev):
                copies.append((rel, slot_dir(slot), os.path.join(slot_top, rel)))
        for rel, info in found_dirs.items():
            want = directories.get(rel)
            if want is not None and stat.S_IMODE(want.st_mode) != stat.S_IMODE(info.st_mode):
                problems.append(f"{rel}/ (slot {slot_dir(slot)}: mode differs)")
    copied = in_batches(copies, lambda copy: sha256_file(Path(copy[2])), jobs)
    problems += [f"{rel} (slot {slot}: differs from the prefix)"
                 for (rel, slot, _), sha256 in zip(copies, copied, strict=True)
                 if lines.get(rel, "").rpartition(" ")[2] != sha256]  # fmt: skip
    problems += [f"{rel} (in slots {', '.join(s)})" for rel, s in sorted(seen.items())
                 if len(s) > 1]  # fmt: skip
    problems += [f"{rel} (in no slot)" for rel in sorted(set(entries) - set(seen))]
    problems += [f"{rel}/ (in no slot)" for rel in sorted(set(directories) - dirs_seen)]
    if problems:
        raise BuildError(
            f"Layer split of {prefix}: the layers are not the verified prefix: "
            f"{_listing(sorted(problems))}."
        )


def _same(source: str, copy: str, want: os.stat_result, got: os.stat_result) -> bool:
    """Kind, symlink target, mode and size (a copy's bytes: ``check_slots``)."""
    if stat.S_IFMT(want.st_mode) != stat.S_IFMT(got.st_mode):
        return False
    if stat.S_ISLNK(want.st_mode):
        return os.readlink(source) == os.readlink(copy)
    return stat.S_IMODE(want.st_mode) == stat.S_IMODE(got.st_mode) and \
        want.st_size == got.st_size


# --- command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lockdock.installer.layers",
        description="Split a verified prefix into the image's layer slots by owning package.",
    )
    parser.add_argument("--prefix", type=Path)
    parser.add_argument("--out", type=Path, help="the slots' parent (replaced)")
    parser.add_argument("--manifest-of", type=Path, metavar="PREFIX",
                        help="only print the manifest sha256 of PREFIX (as the report has it)")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="what the image's / is (default /)")  # fmt: skip
    parser.add_argument("--solo-min-bytes", type=int, default=SOLO_MIN_BYTES,
                        help=f"installed size from which a package gets its own layer "
                             f"(default {SOLO_MIN_BYTES})")
    parser.add_argument("--solo-min-mib", type=int, metavar="MIB",
                        help="the same in MiB (the builder passes a flavor's solo-layer-mib)")
    parser.add_argument("--ship", type=Path, metavar="FILE_OR_DIR",
                        help=f"only write this file (a folder: its files) as the tree "
                             f"--ship-out/{SHARE_DIR}/<name> with fixed times (the image's "
                             "lock and SBOM layers)")
    parser.add_argument("--ship-out", type=Path, metavar="DIR")
    return parser


def source_date_epoch_from_env() -> int | None:
    """The build's ``SOURCE_DATE_EPOCH`` (``textio.source_date_epoch``: the one parser)."""
    return source_date_epoch(kind=BuildError)


def _write_shipped_tree(source: Path, out: Path) -> int:
    try:
        paths = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() \
            else [source]
        files = {f"{SHARE_DIR}/{path.name}": path.read_bytes() for path in paths}
        write_fixed_time_tree(out, files, clamp(None, source_date_epoch_from_env()))
    except OSError as error:
        print(f"lockdock: error: cannot write {out} from {source}: {error}", file=sys.stderr)
        return BuildError.exit_code
    except LockdockError as error:
        print(f"lockdock: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.manifest_of:
        print(prefix_manifest_sha256(args.manifest_of, jobs=os.cpu_count() or 1))
        return 0
    if args.ship or args.ship_out:
        if not (args.ship and args.ship_out):
            parser.error("--ship and --ship-out go together")
        return _write_shipped_tree(args.ship, args.ship_out)
    if not (args.prefix and args.out):
        parser.error("--prefix and --out are required")
    solo_min_bytes = args.solo_min_bytes if args.solo_min_mib is None else args.solo_min_mib * MIB
    try:
        split = write_slots(args.prefix, args.out, root=args.root,
                            source_date_epoch=source_date_epoch_from_env(),
                            solo_min_bytes=solo_min_bytes)  # fmt: skip
    except LockdockError as error:
        print(f"lockdock: error: {error}", file=sys.stderr)
        return error.exit_code
    used = sum(1 for keys in split.slots.values() if keys)
    print(f"layers: {len(split.placed)} file(s) of {len(split.sizes)} package(s) in {used} "
          f"slot(s) of {SLOTS} under {args.out} (directories: {STABLE_EPOCH} or earlier)",
          file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
