"""Compiled ``.pyc`` files kept per wheel between image builds (the builder stage's BuildKit
cache mount), so a relock that keeps torch does not byte-compile its 5,000 sources again.

A checked-hash pyc is a function of its source, its path (``co_filename``) and the
interpreter's bytecode format; a wheel's sources are fixed by the wheel's sha256 (verified
against the lock). So an entry is keyed by ``sha256(FORMAT, magic number, cache tag,
site-packages path, wheel sha256)`` and holds the pycs that compiling that wheel wrote, with
their modes: restoring it gives the bytes and modes compiling would give (a test installs
with a cold and a warm cache and compares every file). Entries are written to a temporary
folder and renamed into place, so a killed build leaves no half entry; an entry that cannot
be read is a miss, and so is one that names files the wheel does not have, a pyc not beside
its source or not a checked-hash pyc of this interpreter (a cache mount is shared by every
build on a builder, so a tampered entry cannot write outside ``__pycache__`` folders). What
a well-formed pyc contains is not checked: a builder shared with untrusted builds shares its
cache mounts with them, so build on one of your own (``--builder``), as its layer cache
already asks. BuildKit's
``--no-cache`` keeps cache mounts, and so this cache (``lockdock build --no-cache`` then
differs from a normal build in nothing but time, and a later build reuses its layers);
``verify-repro`` turns it off (build argument ``PYC_CACHE=off``): both of its builds compile
everything, so a compile that is not deterministic still shows.
Standard library only: part of the installer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from lockdock.errors import InstallError
from lockdock.fsutil import replace_file
from lockdock.progress import say

FORMAT = "lockdock-pyc-1"
#: The builder stage's cache mount (images/base/stages.Dockerfile) and the build argument
#: that turns it off (images/base/build/install-env reads it).
BUILDER_PYC_CACHE = "/var/cache/lockdock/pyc"
PYC_CACHE_ARG = "PYC_CACHE"
PYC_CACHE_OFF = "off"
INDEX = "pycs.json"
#: A pyc's bytes 4..8: checked-hash (PEP 552), what the installer compiles.
CHECKED_HASH_FLAGS = (3).to_bytes(4, "little")
_IDENTITY = (
    "import importlib.util, sys; "
    "sys.stdout.write(importlib.util.MAGIC_NUMBER.hex() + ' ' + sys.implementation.cache_tag)"
)


def _beside(source: str, pyc: str) -> bool:
    """``pyc`` is ``<source's folder>/__pycache__/<source's stem>.<tag>.pyc``."""
    folder, _, name = source.rpartition("/")
    stem = name.removesuffix(".py")
    prefix = f"{folder}/__pycache__/{stem}." if folder else f"__pycache__/{stem}."
    rest = pyc.removeprefix(prefix)
    return (pyc.startswith(prefix) and rest.endswith(".pyc") and "/" not in rest
            and ".." not in pyc.split("/"))  # fmt: skip


def interpreter_identity(python: Path, env: Mapping[str, str]) -> str:
    """The prefix interpreter's bytecode format: magic number and cache tag."""
    proc = subprocess.run([str(python), "-c", _IDENTITY], env=dict(env), capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode != 0 or not proc.stdout.strip():
        raise InstallError(f"{python} cannot report its bytecode format: {proc.stderr.strip()}")
    return proc.stdout.strip()


@dataclass(frozen=True)
class PycCache:
    root: Path
    identity: str  # magic number, cache tag, site-packages path
    site_packages: Path

    @property
    def magic(self) -> bytes:
        return bytes.fromhex(self.identity.split()[0])

    @classmethod
    def open(cls, root: Path, python: Path, site_packages: Path,
             env: Mapping[str, str]) -> PycCache:  # fmt: skip
        root.mkdir(parents=True, exist_ok=True)
        identity = f"{interpreter_identity(python, env)} {site_packages}"
        return cls(root, identity, site_packages)

    def entry(self, wheel_sha256: str) -> Path:
        key = hashlib.sha256(f"{FORMAT}\0{self.identity}\0{wheel_sha256}".encode()).hexdigest()
        return self.root / key

    def lookup(
        self, wheel_sha256: str, sources: Collection[str]
    ) -> dict[str, tuple[str, int]] | None:
        """source -> (pyc, mode), relative to site-packages; None: not cached, unreadable, or
        not an entry for these ``sources`` (the wheel's, relative to site-packages).

        A cache mount is shared by every build on the builder: an entry is used only if it
        names sources of this wheel, each pyc beside its source in ``__pycache__`` with a
        plain mode, and each pyc is a checked-hash pyc of this interpreter's format."""
        entry = self.entry(wheel_sha256)
        try:
            data = json.loads((entry / INDEX).read_text(encoding="utf-8"))
            index = {str(src): (str(pyc), int(mode)) for src, (pyc, mode) in data.items()}
            for source, (pyc, mode) in index.items():
                if source not in sources or not _beside(source, pyc) or not 0 <= mode <= 0o777:
                    return None
                with open(entry / "files" / pyc, "rb") as handle:
                    if handle.read(8) != self.magic + CHECKED_HASH_FLAGS:
                        return None
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        return index

    def restore(self, wheel_sha256: str, index: Mapping[str, tuple[str, int]]) -> dict[Path, Path]:
        """Copy an entry's pycs into site-packages: source path -> pyc path."""
        entry, site = self.entry(wheel_sha256) / "files", self.site_packages
        restored: dict[Path, Path] = {}
        for source, (pyc, mode) in sorted(index.items()):
            target = site / pyc
            target.parent.mkdir(parents=True, exist_ok=True)
            replace_file(target, (entry / pyc).read_bytes(), mode)
            restored[site / source] = target
        return restored

    def store(self, wheel_sha256: str, pycs: Mapping[Path, Path]) -> None:
        """Keep what compiling one wheel wrote; a failure to keep it only costs a compile."""
        final = self.entry(wheel_sha256)
        if final.exists():
            return
        temp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
        site = self.site_packages
        try:
            index: dict[str, tuple[str, int]] = {}
            for source, pyc in sorted(pycs.items()):
                rel = pyc.relative_to(site).as_posix()
                copy = temp / "files" / rel
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(pyc, copy)
                index[source.relative_to(site).as_posix()] = (rel, stat.S_IMODE(pyc.stat().st_mode))
            (temp / INDEX).write_text(json.dumps(index, sort_keys=True), encoding="utf-8")
            os.rename(temp, final)
        except OSError as error:
            say(f"pyc cache: not keeping the pycs of one wheel ({error})")
        finally:
            shutil.rmtree(temp, ignore_errors=True)
