"""Locked wheels -> a prefix's site-packages: what ``pip install --no-deps`` does for a wheel
(the binary distribution format, https://packaging.python.org/specifications/), without
pip's second hash of every archive, its serial extraction and its serial byte-compilation.

Why not pip: in the torch lock pip took 21 s where unzipping the same wheels takes 5 s
(benchmarks/install.py). The archives were hash-checked against the lock just before
(``store.verify_artifacts``), so nothing here hashes them again; each wheel is extracted by
several threads (zlib releases the GIL); the ``.py`` files are compiled by the prefix's own
interpreter in parallel processes (its pyc format is its own).

The result is a function of the wheels and the prefix path only:

- files get mode 0644, or 0755 where the archive marks them executable; directories 0755;
- ``.pyc`` files are checked-hash (``SOURCE_DATE_EPOCH`` semantics: no timestamp inside),
  compiled with ``PYTHONHASHSEED=0`` (a frozenset constant's order does not vary by run);
- entry-point scripts use pip's template and a ``#!<prefix>/bin/python`` line;
- ``RECORD`` is the wheel's own rows for files copied as they are, computed rows for what
  was written (rewritten ``#!python`` scripts, entry points, pycs, ``INSTALLER``,
  ``REQUESTED``), sorted; ``INSTALLER`` says ``lockdock``.

A member path that leaves its scheme folder (``../``, absolute) or a wheel without exactly one
``.dist-info`` with a ``WHEEL`` file is refused (IntegrityError) before anything is written.
Standard library only: part of the installer.
"""

from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import os
import posixpath
import re
import threading
import zipfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from lockdock.errors import InstallError, IntegrityError
from lockdock.fsutil import replace_file
from lockdock.installer.byte_compile import Compilation
from lockdock.installer.pyc_cache import PycCache
from lockdock.progress import say

INSTALLER_NAME = "lockdock\n"
EXECUTABLE_BITS = 0o111
#: Members at least this large are extracted by a thread alone; smaller ones in batches.
BIG_MEMBER = 1 << 20
BATCH_FILES = 256
#: The longest ``#!`` line Linux executes; longer ones get pip's ``/bin/sh`` trampoline.
MAX_SHEBANG = 127
SCRIPT_TEMPLATE = """\
# -*- coding: utf-8 -*-
import re
import sys
from {module} import {import_name}
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({function}())
"""
#: Runs in the prefix's interpreter: compile each path read from stdin (checked-hash), print
#: each pyc written. A file that does not compile (a Python 2 leftover) gets no pyc, as pip.
_SCHEME_MEMBER = re.compile(r"^[^/]+\.data/(purelib|platlib|scripts|headers|data)/(.+)$")


@dataclass(frozen=True)
class Scheme:
    """Where a wheel's parts go in one prefix (pip's ``posix_prefix`` scheme)."""

    prefix: Path
    site_packages: Path
    python: Path  # the interpreter entry points name: <prefix>/bin/python
    include: Path  # headers go to include/pythonX.Y/<project>

    @classmethod
    def of(cls, prefix: Path, python: Path) -> Scheme:
        sites = sorted(prefix.glob("lib/python3*/site-packages"))
        if len(sites) != 1:
            raise InstallError(
                f"{prefix} has {len(sites)} lib/python3*/site-packages folders, not one: "
                "the lock's conda part must install exactly one Python."
            )
        version = sites[0].parent.name  # python3.11
        return cls(prefix, sites[0], python, prefix / "include" / version)

    def folder(self, part: str, project: str) -> Path:
        return {
            "purelib": self.site_packages,
            "platlib": self.site_packages,
            "scripts": self.prefix / "bin",
            "headers": self.include / project,
            "data": self.prefix,
        }[part]


@dataclass(frozen=True)
class Placement:
    """One archive member and where it is written."""

    member: str
    dest: Path
    executable: bool
    rewrite_shebang: bool  # a .data/scripts file starting with #!python


@dataclass(frozen=True)
class WheelPlan:
    wheel: Path
    dist_info: str  # name of the .dist-info folder
    project: str
    placements: tuple[Placement, ...]
    record_rows: dict[str, tuple[str, str]]  # member -> (hash, size) from the wheel's RECORD
    sizes: dict[str, int]  # member -> uncompressed size
    entry_points: dict[str, str]  # script name -> "module:attr"


def _bad(wheel: Path, why: str) -> IntegrityError:
    return IntegrityError(f"Wheel {wheel.name} cannot be installed: {why}.")


def _inside(base: Path, rel: str, wheel: Path) -> Path:
    """``base/rel``, refusing a member path that would leave ``base``."""
    normal = posixpath.normpath(rel)
    if rel.startswith("/") or normal == ".." or normal.startswith("../") or "\\" in rel:
        raise _bad(wheel, f"member {rel!r} points outside its folder")
    return base / normal


def plan_wheel(wheel: Path, scheme: Scheme) -> WheelPlan:
    """Read ``wheel``'s table of contents and metadata; decide every file's destination."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            names = {i.filename for i in infos}
            dist_infos = sorted(
                {n.split("/", 1)[0] for n in names if re.match(r"^[^/]+\.dist-info/WHEEL$", n)}
            )
            if len(dist_infos) != 1:
                raise _bad(wheel, f"{len(dist_infos)} .dist-info folders with a WHEEL file")
            dist_info = dist_infos[0]
            wheel_meta = archive.read(f"{dist_info}/WHEEL").decode("utf-8")
            record_text = (
                archive.read(f"{dist_info}/RECORD").decode("utf-8")
                if f"{dist_info}/RECORD" in names else ""
            )
            entry_text = (
                archive.read(f"{dist_info}/entry_points.txt").decode("utf-8")
                if f"{dist_info}/entry_points.txt" in names else ""
            )
            shebang_heads = {
                i.filename: archive.open(i).read(8)
                for i in infos
                if re.match(r"^[^/]+\.data/scripts/", i.filename)
            }
    except (OSError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as error:
        raise _bad(wheel, f"unreadable archive ({error})") from None
    if not re.search(r"^Wheel-Version:\s*1\.", wheel_meta, re.MULTILINE):
        raise _bad(wheel, "its WHEEL file does not declare Wheel-Version 1.x")
    project = dist_info[: -len(".dist-info")].rsplit("-", 1)[0]
    placements = []
    seen: dict[Path, str] = {}
    for info in infos:
        name = info.filename
        if name == f"{dist_info}/RECORD" or name.endswith(("/RECORD.jws", "/RECORD.p7s")):
            continue
        match = _SCHEME_MEMBER.match(name)
        if not match and re.match(r"^[^/]+\.data/", name):
            raise _bad(wheel, f"member {name!r} is in no scheme this installer knows "
                              "(purelib, platlib, scripts, headers, data)")  # fmt: skip
        if match:
            part, rest = match.groups()
            dest = _inside(scheme.folder(part, project), rest, wheel)
        else:
            part, dest = "purelib", _inside(scheme.site_packages, name, wheel)
        if dest in seen:
            raise _bad(wheel, f"members {seen[dest]!r} and {name!r} are one file")
        seen[dest] = name
        mode = info.external_attr >> 16
        rewrite = part == "scripts" and shebang_heads.get(name, b"").startswith(b"#!python")
        placements.append(
            Placement(name, dest, bool(mode & EXECUTABLE_BITS) or part == "scripts", rewrite)
        )
    rows: dict[str, tuple[str, str]] = {}
    for row in csv.reader(io.StringIO(record_text)):
        if len(row) >= 3 and row[1]:
            rows[row[0]] = (row[1], row[2])
    sizes = {i.filename: i.file_size for i in infos}
    return WheelPlan(wheel, dist_info, project, tuple(placements), rows, sizes,
                     _console_scripts(entry_text, wheel))  # fmt: skip


def check_wheels(wheels: Sequence[Path], prefix: Path, python_version: str | None) -> None:
    """Every refusal ``plan_wheel`` makes from the archives alone, before ``prefix`` exists:
    planned against the scheme the lock's Python will give it (``lib/pythonX.Y``)."""
    folder = f"python{python_version or 3}"
    site = prefix / "lib" / folder / "site-packages"
    scheme = Scheme(prefix, site, prefix / "bin" / "python", prefix / "include" / folder)
    for wheel in wheels:
        plan_wheel(wheel, scheme)


def _console_scripts(text: str, wheel: Path) -> dict[str, str]:
    if not text.strip():
        return {}
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error as error:
        raise _bad(wheel, f"unreadable entry_points.txt ({error})") from None
    scripts: dict[str, str] = {}
    for section in ("console_scripts", "gui_scripts"):
        if parser.has_section(section):
            for name, target in parser.items(section):
                if "/" in name or name in ("", ".", ".."):
                    raise _bad(wheel, f"entry point name {name!r} is not a file name")
                scripts[name] = target.split("[", 1)[0].strip()
    return scripts


def shebang(python: Path) -> bytes:
    """pip's: ``#!<python>``, or the ``/bin/sh`` trampoline for a long or spaced path."""
    path = str(python)
    if len(path) + 3 <= MAX_SHEBANG and " " not in path:
        return f"#!{path}\n".encode()
    return f"#!/bin/sh\n'''exec' \"{path}\" \"$0\" \"$@\"\n' '''\n".encode()


def entry_point_script(target: str, python: Path) -> bytes:
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise InstallError(f"entry point {target!r} is not of the form module:function")
    text = SCRIPT_TEMPLATE.format(
        module=module.strip(), import_name=attr.strip().split(".")[0], function=attr.strip()
    )
    return shebang(python) + text.encode()


# --- acting ----------------------------------------------------------------------------


def record_hash(data: bytes) -> str:
    """A ``RECORD`` row's hash field: ``sha256=`` + urlsafe base64 without padding."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
        b"=").decode()


def _record_row(path: Path, data: bytes | None = None) -> tuple[str, str]:
    data = path.read_bytes() if data is None else data
    return record_hash(data), str(len(data))


def _write(path: Path, data: bytes, executable: bool) -> None:
    replace_file(path, data, 0o755 if executable else 0o644)


_handles = threading.local()


def _archive(wheel: Path) -> zipfile.ZipFile:
    """This thread's own handle on ``wheel`` (a ZipFile is not safe to share)."""
    cache: dict[Path, zipfile.ZipFile] = _handles.__dict__.setdefault("open", {})
    if wheel not in cache:
        cache[wheel] = zipfile.ZipFile(wheel)
    return cache[wheel]


def _extract(plan: WheelPlan, placements: Sequence[Placement], python: Path) -> None:
    archive = _archive(plan.wheel)
    for placement in placements:
        with archive.open(placement.member) as source:
            data = source.read()
        if placement.rewrite_shebang:
            data = shebang(python) + data.split(b"\n", 1)[1]
        _write(placement.dest, data, placement.executable)


Task = tuple[WheelPlan, list[Placement]]


def extraction_tasks(plans: Sequence[WheelPlan], selected: Callable[[Placement], bool],
                     sizes: Mapping[tuple[Path, str], int]) -> list[Task]:  # fmt: skip
    """Largest members first, each alone; the small ones in batches: threads then finish
    together (a torch wheel is one 434 MB library and 12,000 small files)."""
    members = sorted(
        ((plan, p) for plan in plans for p in plan.placements if selected(p)),
        key=lambda item: (-sizes.get((item[0].wheel, item[1].member), 0), item[1].member),
    )
    tasks: list[Task] = []
    batch: dict[Path, Task] = {}
    for plan, placement in members:
        if sizes.get((plan.wheel, placement.member), 0) >= BIG_MEMBER:
            tasks.append((plan, [placement]))
            continue
        current = batch.setdefault(plan.wheel, (plan, []))
        current[1].append(placement)
        if len(current[1]) >= BATCH_FILES:
            tasks.append(batch.pop(plan.wheel))
    tasks.extend(batch.values())
    return tasks


def make_folders(plans: Sequence[WheelPlan]) -> None:
    for folder in sorted({p.dest.parent for plan in plans for p in plan.placements}):
        folder.mkdir(parents=True, exist_ok=True)


def extract_wheels(plans: Sequence[WheelPlan], python: Path, jobs: int,
                   selected: Callable[[Placement], bool] = lambda _: True,
                   done: Callable[[WheelPlan, list[Placement]], None] | None = None,
                   ) -> None:  # fmt: skip
    """The ``selected`` files of every wheel in place (their folders exist: ``make_folders``)
    over ``jobs`` threads; ``done`` is called (in this thread) with each batch written."""
    sizes = {(plan.wheel, m): size for plan in plans for m, size in plan.sizes.items()}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            pool.submit(_extract, plan, chunk, python): (plan, chunk)
            for plan, chunk in extraction_tasks(plans, selected, sizes)
        }
        for future in as_completed(futures):
            future.result()
            if done is not None:
                done(*futures[future])


def _rel(path: Path, site_packages: Path) -> str:
    return os.path.relpath(path, site_packages).replace(os.sep, "/")


def finish_wheel(plan: WheelPlan, scheme: Scheme, pycs: dict[Path, Path]) -> None:
    """Entry-point scripts, INSTALLER, REQUESTED and the sorted RECORD of one wheel."""
    site = scheme.site_packages
    rows: dict[str, tuple[str, str]] = {}
    for placement in plan.placements:
        rel = _rel(placement.dest, site)
        given = plan.record_rows.get(placement.member)
        rows[rel] = given if given and not placement.rewrite_shebang else _record_row(
            placement.dest
        )
        pyc = pycs.get(placement.dest)
        if pyc is not None:
            rows[_rel(pyc, site)] = _record_row(pyc)
    bin_dir = scheme.prefix / "bin"
    for name, target in sorted(plan.entry_points.items()):
        data = entry_point_script(target, scheme.python)
        bin_dir.mkdir(parents=True, exist_ok=True)
        _write(bin_dir / name, data, executable=True)
        rows[_rel(bin_dir / name, site)] = _record_row(bin_dir / name, data)
    meta = site / plan.dist_info
    for name, data in (("INSTALLER", INSTALLER_NAME.encode()), ("REQUESTED", b"")):
        _write(meta / name, data, executable=False)
        rows[_rel(meta / name, site)] = _record_row(meta / name, data)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for rel in sorted(rows):
        writer.writerow([rel, *rows[rel]])
    writer.writerow([f"{plan.dist_info}/RECORD", "", ""])
    _write(meta / "RECORD", out.getvalue().encode(), executable=False)


def install_wheels(wheels: Sequence[Path], prefix: Path, python: Path, env: dict[str, str],
                   *, jobs: int | None = None, pyc_cache: Path | None = None,
                   sha256: Mapping[Path, str] | None = None) -> None:  # fmt: skip
    """Install ``wheels`` (already hash-checked) into ``prefix`` with ``python``'s scheme.

    ``pyc_cache``: a folder of compiled pycs per wheel (``lockdock.installer.pyc_cache``),
    used for the wheels whose archive ``sha256`` names."""
    jobs = jobs or max(1, min(8, os.cpu_count() or 1))
    scheme = Scheme.of(prefix, python)
    plans = [plan_wheel(w, scheme) for w in wheels]  # every refusal before the first write
    # A file two wheels ship (a namespace package's __init__.py) is written once, by the
    # later wheel in ``wheels``, as pip's serial install leaves it; both RECORDs list it.
    writer = {p.dest: plan.wheel for plan in plans for p in plan.placements}
    written = [replace(plan, placements=tuple(p for p in plan.placements
                                              if writer[p.dest] == plan.wheel))
               for plan in plans]  # fmt: skip
    contested = {plan.wheel for plan, mine in zip(plans, written, strict=True)
                 if len(mine.placements) != len(plan.placements)}  # fmt: skip
    digests = {w: sha for w, sha in (sha256 or {}).items() if w not in contested}
    cache = PycCache.open(pyc_cache, python, scheme.site_packages, env) if pyc_cache else None

    def compiled(placement: Placement) -> bool:
        return placement.dest.suffix == ".py" and scheme.site_packages in placement.dest.parents

    def sources_of(plan: WheelPlan) -> set[str]:
        return {p.dest.relative_to(scheme.site_packages).as_posix()
                for p in plan.placements if compiled(p)}  # fmt: skip

    cached = {
        plan.wheel: index for plan in plans
        if cache and plan.wheel in digests
        and (index := cache.lookup(digests[plan.wheel], sources_of(plan))) is not None
    }  # fmt: skip

    def shipped_pyc(placement: Placement) -> bool:
        return placement.dest.suffix == ".pyc"

    def compile_batch(plan: WheelPlan, placements: list[Placement]) -> None:
        if plan.wheel not in cached:
            compilation.submit(p.dest for p in placements)

    try:
        make_folders(written)
        # A wheel's own pycs first: compiling its sources then replaces them, as pip's does.
        extract_wheels(written, python, jobs, shipped_pyc)
        with Compilation(python, env, jobs) as compilation:
            extract_wheels(written, python, jobs, compiled, compile_batch)  # compiled as written
            extract_wheels(written, python, jobs,
                           lambda p: not compiled(p) and not shipped_pyc(p))  # meanwhile, the rest
            pycs = compilation.result()
    except OSError as error:
        raise InstallError(f"Writing the wheels' files into {prefix} failed: {error}") from None
    if cache:
        for plan in written:
            index = cached.get(plan.wheel)
            if index is not None:
                pycs.update(cache.restore(digests[plan.wheel], index))
            elif plan.wheel in digests:
                mine = {p.dest: pycs[p.dest] for p in plan.placements if p.dest in pycs}
                cache.store(digests[plan.wheel], mine)
        if cached:
            say(f"pyc cache: {len(cached)} of {len(plans)} wheel(s) needed no compiling")
    for plan in plans:
        finish_wheel(plan, scheme, pycs)


__all__ = [
    "Scheme", "WheelPlan", "check_wheels", "entry_point_script", "install_wheels", "plan_wheel",
    "record_hash", "shebang",
]
