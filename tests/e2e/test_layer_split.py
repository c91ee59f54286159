"""The layer splitter on real installs (a packaged CPython, conda packages, wheels): the slots
are the verified prefix exactly, a one-package relock changes one bucket and the shared slot,
and the hard cases (a conda clobber, a wheel overwriting a conda file, an empty package, a
stray file) have the outcome layer_plan's docstring documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockdock.errors import BuildError
from lockdock.installer import install, layer_plan, layers
from lockdock.installer import prefix as prefix_mod
from lockdock.installer.layer_plan import (
    FIRST_BUCKET_SLOT,
    REPORT_PATH,
    SHARED_SLOT,
    SLOTS,
    STABLE_EPOCH,
    bucket_of,
    slot_dir,
)
from lockdock.installer.layers import main as layers_main
from lockdock.installer.layers import write_slots
from lockdock.installer.prefix_manifest import prefix_manifest_sha256
from lockdock.testing import ChannelServer, FakePackage, build_channel
from lockdock.testing.channel import BUILD_TIMESTAMP
from lockdock.testing.installs import (
    Entry,
    conda_entry,
    make_wheel,
    manifest_difference,
    tree_manifest,
    wheel_entry,
    write_lock,
)
from tests.fixtures.cpython import InstallChannel

SITE = "lib/python3.11/site-packages"

EXTRA = (
    FakePackage("hello", "1.1", build="0", files={"share/hello/version": "1.1\n"}),
    FakePackage("clobber-a", "1.0", files={"share/clob/x": "a\n", "share/clob/a-only": "a\n"}),
    FakePackage("clobber-b", "1.0", files={"share/clob/x": "b\n"}),
    FakePackage("emptypkg", "1.0"),
    FakePackage("overlap", "1.0", build="pyh0_0", noarch="python", depends=("python",),
                files={"site-packages/overlap_mod.py": "WHO = 'conda'\n"}),
)  # fmt: skip


@dataclass(frozen=True)
class Locks:
    old: Path  # hello 1.0
    new: Path  # hello 1.1, else the same
    hard: Path  # old + clobbers, an empty package, a wheel overwriting a conda file


@pytest.fixture(scope="module")
def locks(
    tmp_path_factory: pytest.TempPathFactory,
    install_channel: InstallChannel,
    small_wheels: list[Path],
) -> Iterator[Locks]:
    root = tmp_path_factory.mktemp("layer-locks")
    served = root / "served"
    channel = build_channel(served / "extra", EXTRA)
    overwriter = make_wheel(root / "wheels", "overwriter", "1.0",
                            {"overlap_mod.py": "WHO = 'pip'\n"})  # fmt: skip
    with ChannelServer(served) as server:

        def extra(name: str, version: str) -> Entry:
            package = next(p for p in EXTRA if (p.name, p.version) == (name, version))
            url = f"{server.url}/extra/noarch/{package.filename}"
            return conda_entry(channel / "noarch" / package.filename, url)

        def base(*names: str) -> list[Entry]:
            return [conda_entry(install_channel.packages[n], install_channel.package_url(n))
                    for n in names]  # fmt: skip

        common = [*base("python", "libnative", "tinylib"), *(wheel_entry(w) for w in small_wheels)]
        hello_old = base("hello")
        channels = (install_channel.url,)
        yield Locks(
            old=write_lock(root / "old.yml", [*common, *hello_old], channels=channels),
            new=write_lock(root / "new.yml", [*common, extra("hello", "1.1")], channels=channels),
            hard=write_lock(root / "hard.yml", [
                *common, *hello_old, extra("clobber-a", "1.0"), extra("clobber-b", "1.0"),
                extra("emptypkg", "1.0"), extra("overlap", "1.0"), wheel_entry(overwriter),
            ], channels=channels),
        )  # fmt: skip


def _install(lock: Path, prefix: Path, store: Path) -> None:
    if prefix.exists():
        shutil.rmtree(prefix)
    install.install(lock, prefix, platform="linux-64", store=store)


def slot_trees(out: Path, inside: str) -> dict[str, dict[str, str]]:
    """Slot -> tree_manifest of its part of the prefix."""
    return {
        slot_dir(s): tree_manifest(out / slot_dir(s) / inside)
        for s in range(SLOTS)
        if (out / slot_dir(s) / inside).is_dir()
    }


def slot_digest(top: Path) -> str:
    """Content, modes and times of a slot tree: what its layer's bytes are made of."""
    digest = hashlib.sha256()
    for directory, dirnames, filenames in sorted(os.walk(top)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(directory) / name
            info = path.lstat()
            body = (os.readlink(path) if stat.S_ISLNK(info.st_mode) else
                    "" if stat.S_ISDIR(info.st_mode) else
                    hashlib.sha256(path.read_bytes()).hexdigest())  # fmt: skip
            digest.update(f"{path.relative_to(top)}|{info.st_mode:o}|{int(info.st_mtime)}|"
                          f"{body}\n".encode())  # fmt: skip
    return digest.hexdigest()


def merged(trees: dict[str, dict[str, str]]) -> dict[str, str]:
    union: dict[str, str] = {}
    for tree in trees.values():
        union.update(tree)
    return union


def report(out: Path) -> dict[str, object]:
    return dict(json.loads((out / slot_dir(SHARED_SLOT) / REPORT_PATH).read_text()))


def slot_of(out: Path, manager: str, name: str) -> str:
    for entry in report(out)["slots"]:  # type: ignore[attr-defined]
        if any((p["manager"], p["name"]) == (manager, name) for p in entry["packages"]):
            return str(entry["slot"])
    raise AssertionError(f"{manager}:{name} is in no slot")


def test_slots_are_the_verified_prefix_exactly(locks: Locks, tmp_path: Path) -> None:
    prefix, out = tmp_path / "root/env", tmp_path / "layers"
    _install(locks.old, prefix, tmp_path / "store")
    before = tree_manifest(prefix)
    write_slots(prefix, out, root=tmp_path / "root")
    trees = slot_trees(out, "env")
    files = {path for tree in trees.values() for path, kind in tree.items() if kind != "dir"}
    assert sum(1 for t in trees.values() for k in t.values() if k != "dir") == len(files)
    assert merged(trees) == before, manifest_difference(merged(trees), before)
    assert tree_manifest(prefix) == before  # the split leaves the prefix as it was
    prefix_mod.verify_prefix(locks.old, prefix, "linux-64")
    # The big interpreter has a slot of its own; the small packages are in their buckets.
    assert int(slot_of(out, "conda", "python")) < FIRST_BUCKET_SLOT
    assert slot_of(out, "conda", "hello") == slot_dir(bucket_of("conda:hello"))
    assert slot_of(out, "pip", "tinywheel") == slot_dir(bucket_of("pip:tinywheel"))
    assert (out / slot_dir(SHARED_SLOT) / "env/conda-meta/history").exists()
    # The report names the verified prefix's manifest; the slots' union has the same one.
    union = tmp_path / "union"
    for slot in range(SLOTS):
        shutil.copytree(out / slot_dir(slot), union, symlinks=True, dirs_exist_ok=True)
    assert report(out)["prefix_manifest_sha256"] == prefix_manifest_sha256(union / "env")
    (union / "env/share/hello/version").write_text("tampered\n")
    assert report(out)["prefix_manifest_sha256"] != prefix_manifest_sha256(union / "env")


def test_a_prefix_on_another_file_system_is_copied_into_the_same_slots_and_checked(
    locks: Locks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image builder's prefix is a cache mount: its slots are copies, not links, with the
    same bytes, modes and times as linked slots, and a copy that is not the prefix's file
    fails the split (exit 10) naming it."""
    other = Path("/dev/shm")
    prefix = tmp_path / "root/env"
    _install(locks.old, prefix, tmp_path / "store")
    if not other.is_dir() or other.stat().st_dev == prefix.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) to split onto")
    linked, copied = tmp_path / "linked", other / f"lockdock-split-{os.getpid()}"
    try:
        write_slots(prefix, linked, root=tmp_path / "root", source_date_epoch=BUILD_TIMESTAMP)
        write_slots(prefix, copied, root=tmp_path / "root", source_date_epoch=BUILD_TIMESTAMP)
        hello = copied / slot_of(copied, "conda", "hello") / "env/share/hello/version"
        assert hello.stat().st_ino != (prefix / "share/hello/version").stat().st_ino
        for slot in range(SLOTS):
            assert slot_digest(copied / slot_dir(slot)) == slot_digest(linked / slot_dir(slot))

        real_copy = layers._copy

        def bad_copy(source: str, dest: str, info: os.stat_result) -> None:
            real_copy(source, dest, info)
            if source.endswith("share/hello/version"):
                Path(dest).write_bytes(b"1.x\n")  # same size, other bytes

        monkeypatch.setattr(layers, "_copy", bad_copy)
        with pytest.raises(BuildError) as caught:
            write_slots(prefix, copied, root=tmp_path / "root")
        assert "share/hello/version (slot" in str(caught.value)
        assert "differs from the prefix" in str(caught.value)
        assert not copied.exists()  # nothing half-written is left
    finally:
        shutil.rmtree(copied, ignore_errors=True)


def test_an_install_into_a_kept_prefix_is_an_install_into_an_empty_one(
    locks: Locks, tmp_path: Path
) -> None:
    """The image builder keeps its prefix between builds (a cache mount) and brings it to the
    next lock: bumped, removed and added packages, conda clobbers and a wheel overwriting a
    conda file must leave what an install from nothing leaves (no emptied folders)."""
    prefix, store = tmp_path / "env", tmp_path / "store"
    for kept, target in ((locks.old, locks.new), (locks.hard, locks.old), (locks.old, locks.hard)):
        _install(target, prefix, store)
        fresh = tree_manifest(prefix)
        _install(kept, prefix, store)
        install.install(target, prefix, platform="linux-64", store=store)
        assert tree_manifest(prefix) == fresh, (kept.name, target.name,
                                                manifest_difference(tree_manifest(prefix), fresh))


def test_a_lock_with_a_clobber_installs_the_same_prefix_every_time(
    locks: Locks, tmp_path: Path
) -> None:
    """rattler links in parallel: with a clobber the record's path order and the folders of
    a move it did not make varied from one install to the next (2 of 5 differed before the
    installer sorted and dropped them; a race, so this test catches it most times, not
    every time)."""
    prefix, store = tmp_path / "env", tmp_path / "store"
    _install(locks.hard, prefix, store)
    first = tree_manifest(prefix)
    for _ in range(5):
        _install(locks.hard, prefix, store)
        assert tree_manifest(prefix) == first, manifest_difference(tree_manifest(prefix), first)


def test_times_are_each_packages_own_clamped_to_source_date_epoch(
    locks: Locks, tmp_path: Path
) -> None:
    prefix, out = tmp_path / "root/env", tmp_path / "layers"
    _install(locks.old, prefix, tmp_path / "store")
    write_slots(prefix, out, root=tmp_path / "root", source_date_epoch=BUILD_TIMESTAMP + 99)
    hello = out / slot_of(out, "conda", "hello") / "env/share/hello/version"
    assert int(hello.lstat().st_mtime) == BUILD_TIMESTAMP
    wheel = out / slot_of(out, "pip", "tinywheel") / f"env/{SITE}/tinywheel/__init__.py"
    assert int(wheel.lstat().st_mtime) == STABLE_EPOCH
    shared = out / slot_dir(SHARED_SLOT)
    assert {int(p.lstat().st_mtime) for p in shared.rglob("*") if p.is_dir()} == {STABLE_EPOCH}
    write_slots(prefix, out, root=tmp_path / "root", source_date_epoch=STABLE_EPOCH - 10)
    hello = out / slot_of(out, "conda", "hello") / "env/share/hello/version"
    assert int(hello.lstat().st_mtime) == STABLE_EPOCH - 10


def test_one_package_relock_changes_its_bucket_and_the_shared_slot_only(
    locks: Locks, tmp_path: Path
) -> None:
    prefix, store = tmp_path / "root/env", tmp_path / "store"
    digests = []
    for lock, out in ((locks.old, tmp_path / "a"), (locks.new, tmp_path / "b")):
        _install(lock, prefix, store)
        write_slots(prefix, out, root=tmp_path / "root", source_date_epoch=BUILD_TIMESTAMP)
        digests.append({s: slot_digest(out / slot_dir(s)) for s in range(SLOTS)})
    changed = {s for s in range(SLOTS) if digests[0][s] != digests[1][s]}
    assert changed == {SHARED_SLOT, bucket_of("conda:hello")}


def test_a_package_over_part_bytes_is_split_into_byte_stable_parts(
    locks: Locks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The packaged CPython stands in for torch: with parts of 4 MiB it takes MAX_PARTS
    consecutive solo slots, each holding some of its files, together all of them; and the
    parts' bytes do not change when another package is bumped."""
    monkeypatch.setattr(layer_plan, "PART_BYTES", 4 * 1024 * 1024)
    prefix, store = tmp_path / "root/env", tmp_path / "store"
    digests, reports = [], []
    for lock, out in ((locks.old, tmp_path / "a"), (locks.new, tmp_path / "b")):
        _install(lock, prefix, store)
        write_slots(prefix, out, root=tmp_path / "root", source_date_epoch=BUILD_TIMESTAMP)
        digests.append({s: slot_digest(out / slot_dir(s)) for s in range(SLOTS)})
        reports.append(report(out))
    python = [e for e in reports[0]["slots"]
              if any(p["name"] == "python" for p in e["packages"])]  # fmt: skip
    assert len(python) == layer_plan.MAX_PARTS
    assert [int(e["slot"]) for e in python] == list(range(int(python[0]["slot"]),
                                                          int(python[0]["slot"]) + 4))
    assert all(e["files"] > 0 and e["installed_bytes"] > 0 for e in python)
    installed = sum(e["installed_bytes"] for e in python)
    assert installed == sum(p.lstat().st_size for p in _owned_by(prefix, "python"))
    changed = {s for s in range(SLOTS) if digests[0][s] != digests[1][s]}
    assert changed == {SHARED_SLOT, bucket_of("conda:hello")}


def _owned_by(prefix: Path, name: str) -> list[Path]:
    """The files and symlinks python's conda-meta record lists, and their pycs."""
    record = next((prefix / "conda-meta").glob(f"{name}-[0-9]*.json"))
    listed = {prefix / f for f in json.loads(record.read_text())["files"]} | {record}
    pycs = {p for p in prefix.rglob("*.pyc")
            if layer_plan.pyc_source(p.relative_to(prefix).as_posix()) is not None
            and prefix / str(layer_plan.pyc_source(p.relative_to(prefix).as_posix())) in listed
            and p not in listed}  # fmt: skip
    return sorted(listed | pycs)


def test_clobber_overwrite_and_empty_package_outcomes(locks: Locks, tmp_path: Path) -> None:
    prefix, out = tmp_path / "root/env", tmp_path / "layers"
    _install(locks.hard, prefix, tmp_path / "store")
    before = tree_manifest(prefix)
    write_slots(prefix, out, root=tmp_path / "root")
    trees = slot_trees(out, "env")
    assert merged(trees) == before
    where = {path: slot for slot, tree in trees.items() for path, kind in tree.items()
             if kind != "dir"}  # fmt: skip
    # rattler keeps one clobbering file in place and moves the other under __clobbers__/;
    # each is listed by exactly one package, so each is in that package's slot, once.
    moved = [p for p in where if p.startswith("__clobbers__/")]
    assert len(moved) == 1 and moved[0].endswith("/share/clob/x")
    loser = moved[0].split("/")[1]
    winner = ({"clobber-a", "clobber-b"} - {loser}).pop()
    assert where[moved[0]] == slot_of(out, "conda", loser)
    assert where["share/clob/x"] == slot_of(out, "conda", winner)
    # A wheel overwriting a conda package's file: the file (pip's bytes) goes with the wheel.
    overwritten = f"{SITE}/overlap_mod.py"
    assert (prefix / overwritten).read_text() == "WHO = 'pip'\n"
    assert where[overwritten] == slot_of(out, "pip", "overwriter")
    # An empty package is its conda-meta record, in its bucket.
    empty = [p for p in where if p.startswith("conda-meta/emptypkg-")]
    assert len(empty) == 1 and where[empty[0]] == slot_dir(bucket_of("conda:emptypkg"))


def test_a_file_no_package_owns_fails_with_exit_10_naming_it(
    locks: Locks, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix, out = tmp_path / "root/env", tmp_path / "layers"
    _install(locks.old, prefix, tmp_path / "store")
    (prefix / "share/stray.txt").write_text("left by a post-link script\n")
    with pytest.raises(BuildError, match=r"share/stray\.txt"):
        write_slots(prefix, out, root=tmp_path / "root")
    assert not out.exists()
    code = layers_main(["--prefix", str(prefix), "--out", str(out),
                        "--root", str(tmp_path / "root")])  # fmt: skip
    assert code == 10 and "share/stray.txt" in capsys.readouterr().err
    assert not out.exists()
