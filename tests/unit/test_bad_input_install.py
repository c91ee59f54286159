"""Bad input to ``lockdock install``, each refused before the prefix is touched: conda archives
whose paths or links leave the prefix, whose index.json disagrees with the lock in build or
subdir, unsafe wheels behind a good conda part, and a prefix inside the store. Archives are
crafted small ``.tar.bz2`` files (standard library) whose hashes match their lock entries."""

from __future__ import annotations

import bz2
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from lockdock.errors import InstallError, IntegrityError
from lockdock.installer import install, store
from lockdock.installer import prefix as prefix_mod
from lockdock.installer.archive_checks import Listing, Member, listing_problem
from lockdock.testing.installs import Entry, conda_entry, wheel_entry, write_lock

Spec = list[tuple[str, str, str]]  # (member, "file"|"sym"|"hard", content or target)


def _tar(members: Spec) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind in ("sym", "hard"):
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = value
                archive.addfile(info)
            else:
                info.size = len(value.encode())
                archive.addfile(info, io.BytesIO(value.encode()))
    return buf.getvalue()


def make_package(
    folder: Path, members: Spec | None = None, *, paths: list[str] | None = None,
    index: dict[str, object] | None = None, name: str = "hello-1.0-0",
    kinds: dict[str, str] | None = None,
) -> Path:  # fmt: skip
    """``folder/<name>.tar.bz2``: index.json (hello 1.0 build 0 noarch, overridable),
    paths.json (``paths``, default: the members) and ``members``."""
    members = members if members is not None else [("share/hello/version", "file", "1\n")]
    meta = {"name": "hello", "version": "1.0", "build": "0", "build_number": 0,
            "subdir": "noarch", "noarch": "generic", "depends": [], **(index or {})}  # fmt: skip
    listed = paths if paths is not None else [m for m, _, _ in members]
    declared = {m: "softlink" if kind == "sym" else "hardlink" for m, kind, _ in members}
    declared.update(kinds or {})
    paths_json = {"paths": [{"_path": p, "path_type": declared.get(p, "hardlink")}
                            for p in listed], "paths_version": 1}  # fmt: skip
    data = _tar([("info/index.json", "file", json.dumps(meta)),
                 ("info/paths.json", "file", json.dumps(paths_json)), *members])  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.tar.bz2"
    path.write_bytes(bz2.compress(data))
    return path


def _stored(tmp_path: Path, entries: list[Entry]) -> tuple[Path, Path]:
    """A lock of ``entries`` and a store holding each (hash-verified by the installer)."""
    lock = write_lock(tmp_path / "conda-lock.yml", entries)
    store_dir = tmp_path / "store"
    for artifact in prefix_mod.locked_selection(lock, "linux-64", ("main",))[1]:
        target = store.artifact_path(store_dir, artifact)
        target.parent.mkdir(parents=True, exist_ok=True)
        source = next(e.path for e in entries if e.path.name == artifact.filename)
        target.write_bytes(source.read_bytes())
    return lock, store_dir


def _refused(
    tmp_path: Path, entries: list[Entry], match: str,
) -> pytest.ExceptionInfo[IntegrityError]:
    lock, store_dir = _stored(tmp_path, entries)
    env = tmp_path / "env"
    with pytest.raises(IntegrityError, match=match) as caught:
        install.install(lock, env, platform="linux-64", store=store_dir, offline=True)
    assert not env.exists(), "the prefix was touched before the refusal"
    assert not list(tmp_path.glob(".env.lockdock-*")), "left a cache or lock beside the prefix"
    return caught


@pytest.mark.parametrize(
    ("members", "paths", "match"),
    [
        # info/paths.json is what rattler links: a ../ path wrote outside the prefix, exit 0
        ([("share/hello/version", "file", "1\n")], ["../hello-1.0-0/share/hello/version"],
         r"hello-1\.0-0\.tar\.bz2.*paths\.json path '\.\./hello-1\.0-0/share/hello/version' "
         r"has a '\.\.' component"),
        # an absolute path made py-rattler panic (SIGABRT, exit 134)
        ([("share/hello/version", "file", "1\n")], ["/tmp/lockdock-pwned"],
         r"paths\.json path '/tmp/lockdock-pwned' is absolute"),
        # writing below the archive's own symlink could land anywhere
        ([("lib/here", "sym", "."), ("lib/here/x", "file", "1")], None,
         r"paths\.json path 'lib/here/x' is below the archive's symlink 'lib/here'"),
    ],
)
def test_an_unsafe_conda_archive_is_exit_7_before_the_prefix_is_touched(
    tmp_path: Path, members: Spec, paths: list[str] | None, match: str
) -> None:
    package = make_package(tmp_path / "pkgs", members, paths=paths)
    caught = _refused(tmp_path, [conda_entry(package)], match)
    assert caught.value.exit_code == 7
    assert "hello 1.0" in str(caught.value) and "nothing was written" in str(caught.value)


@pytest.mark.parametrize(("target", "why", "declared"), [
    ("/etc/passwd", r"points to the absolute path '/etc/passwd'", "softlink"),
    ("../../../etc", r"points to '\.\./\.\./\.\./etc', outside the prefix", "softlink"),
    # paths.json calling the link a file: rattler links it as it is, the check still reads it
    ("/etc/passwd", r"points to the absolute path '/etc/passwd'", "hardlink"),
])
def test_a_link_out_of_the_prefix_is_exit_7_after_linking_and_the_prefix_stays_incomplete(
    tmp_path: Path, target: str, why: str, declared: str
) -> None:
    """Link targets are not in paths.json: they are read from the links rattler made (every
    listed path, whatever paths.json calls it), and the prefix is never marked complete."""
    package = make_package(tmp_path / "pkgs", [("share/hello/link", "sym", target)])
    if declared == "hardlink":  # an archive whose paths.json lies about the link
        package = make_package(tmp_path / "pkgs2", [("share/hello/link", "sym", target)],
                               paths=["share/hello/link"], kinds={"share/hello/link": "hardlink"})
    lock, store_dir = _stored(tmp_path, [conda_entry(package)])
    env = tmp_path / "env"
    with pytest.raises(IntegrityError, match=rf"member 'share/hello/link' {why}") as caught:
        install.install(lock, env, platform="linux-64", store=store_dir, offline=True)
    assert caught.value.exit_code == 7 and "left marked incomplete" in str(caught.value)
    assert (env / prefix_mod.CONDA_META / prefix_mod.INCOMPLETE_MARKER).exists()


@pytest.mark.parametrize("member", ["../../x", "/tmp/lockdock-member-x"])
def test_a_tar_member_outside_the_package_is_never_written(tmp_path: Path, member: str) -> None:
    """A member paths.json does not list is not linked, and rattler's extraction drops a
    member that would leave its package folder: the install is the listed files, nothing
    lands outside."""
    outside = [tmp_path.parent / "x", Path("/tmp/lockdock-member-x")]
    members = [("share/hello/version", "file", "1\n"), (member, "file", "x")]
    package = make_package(tmp_path / "pkgs", members, paths=["share/hello/version"])
    lock, store_dir = _stored(tmp_path, [conda_entry(package)])
    install.install(lock, tmp_path / "env", platform="linux-64", store=store_dir, offline=True)
    assert (tmp_path / "env/share/hello/version").read_text() == "1\n"
    assert not [p for p in outside if p.exists()]


@pytest.mark.parametrize(
    ("index", "url_folder", "match"),
    [
        ({"build": "7", "build_number": 7}, "noarch",
         r"index\.json says build '7' \(the lock's file name: '0'\)"),
        ({"subdir": "linux-aarch64", "noarch": None}, "noarch",
         r"subdir 'linux-aarch64' \(the lock entry: 'noarch'\)"),
        ({"subdir": "linux-aarch64", "noarch": None}, "pkgs",  # no subdir folder in the URL
         r"subdir 'linux-aarch64' \(the lock entry: 'linux-64 or noarch'\)"),
    ],
)
def test_an_index_json_that_disagrees_in_build_or_subdir_is_exit_7_before_the_prefix(
    tmp_path: Path, index: dict[str, object], url_folder: str, match: str
) -> None:
    package = make_package(tmp_path / url_folder, index=index)
    _refused(tmp_path, [conda_entry(package)], match)


def test_safe_links_and_matching_metadata_pass_the_checks() -> None:
    listing = Listing(
        (Member("lib/libz.so.1.3"), Member("lib/libz.so", symlink="libz.so.1.3"),
         Member("bin/tool", symlink="../lib/tool"), Member("share/a", hardlink="lib/libz.so.1.3"),
         Member("lib/pkgconfig/zlib.pc")),
        ("lib/libz.so", "lib/libz.so.1.3", "bin/tool", "share/a"),
    )  # fmt: skip
    assert listing_problem(listing) is None


def _bad_wheel(folder: Path, members: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in {**members, "demo-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\n",
                           "demo-1.0.dist-info/METADATA": "Name: demo\nVersion: 1.0\n"}.items():
            archive.writestr(name, text)  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ({"demo/../../../../x": "x"}, r"member 'demo/\.\./\.\./\.\./\.\./x' points outside"),
        ({"/tmp/x": "x"}, r"member '/tmp/x' points outside"),
        ({"demo/a.py": "1", "demo/./a.py": "2"},
         r"members 'demo/a\.py' and 'demo/\./a\.py' are one"),
    ],
)
def test_an_unsafe_wheel_is_refused_before_the_conda_part_is_installed(
    tmp_path: Path, members: dict[str, str], match: str
) -> None:
    package = make_package(tmp_path / "pkgs")
    wheel = _bad_wheel(tmp_path / "wheels", members)
    caught = _refused(tmp_path, [conda_entry(package), wheel_entry(wheel)], match)
    assert caught.value.exit_code == 7


@pytest.mark.parametrize("inside", ["", "sha256", "sha256/env"])
def test_a_prefix_in_the_store_is_exit_8_naming_the_store(tmp_path: Path, inside: str) -> None:
    package = make_package(tmp_path / "pkgs")
    lock, store_dir = _stored(tmp_path, [conda_entry(package)])
    target = store_dir / inside if inside else store_dir
    before = sorted(p.relative_to(store_dir) for p in store_dir.rglob("*"))
    with pytest.raises(InstallError, match=f"inside the artifact store {store_dir}") as caught:
        install.install(lock, target, platform="linux-64", store=store_dir, offline=True)
    assert caught.value.exit_code == 8
    assert sorted(p.relative_to(store_dir) for p in store_dir.rglob("*")) == before


def test_a_store_inside_the_prefix_is_exit_8(tmp_path: Path) -> None:
    package = make_package(tmp_path / "pkgs")
    lock, store_dir = _stored(tmp_path, [conda_entry(package)])
    with pytest.raises(InstallError, match=r"the artifact store .* is inside it"):
        install.install(lock, tmp_path, platform="linux-64", store=store_dir, offline=True)
