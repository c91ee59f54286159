"""lockdock.installer.wheel_install: a wheel's files, scripts, pycs and RECORD in a prefix,
with this interpreter standing in for the prefix's (same cache tag)."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lockdock.errors import InstallError, IntegrityError
from lockdock.installer.byte_compile import Compilation
from lockdock.installer.pip_install import interpreter_env
from lockdock.installer.wheel_install import (
    INSTALLER_NAME,
    MAX_SHEBANG,
    install_wheels,
    shebang,
)
from lockdock.testing.installs import make_wheel

VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"


def _prefix(tmp_path: Path) -> tuple[Path, Path, Path]:
    prefix = tmp_path / "env"
    site = prefix / "lib" / VERSION / "site-packages"
    site.mkdir(parents=True)
    (prefix / "bin").mkdir()
    python = prefix / "bin" / "python"
    python.symlink_to(sys.executable)
    return prefix, site, python


def _record(site: Path, dist_info: str) -> dict[str, tuple[str, str]]:
    with open(site / dist_info / "RECORD", newline="", encoding="utf-8") as handle:
        return {row[0]: (row[1], row[2]) for row in csv.reader(handle)}


def _sha(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_files_scripts_pycs_and_record_are_where_pip_puts_them(tmp_path: Path) -> None:
    prefix, site, python = _prefix(tmp_path)
    wheel = make_wheel(
        tmp_path / "wheels", "demo-pkg", "1.0",
        {
            "demo/__init__.py": "def main():\n    print('demo says hi')\n",
            "demo/broken.py": "def (:\n",  # does not compile: installed, no pyc (as pip)
            "demo_pkg-1.0.data/scripts/raw-tool": "#!python\nimport demo\ndemo.main()\n",
            "demo_pkg-1.0.data/data/share/demo/readme.txt": "shared\n",
            "demo_pkg-1.0.data/headers/demo.h": "int demo;\n",
        },
        console_scripts={"demo-cli": "demo:main"},
    )  # fmt: skip
    install_wheels([wheel], prefix, python, interpreter_env(), jobs=2)

    assert (site / "demo/__init__.py").is_file()
    assert (prefix / "share/demo/readme.txt").read_text() == "shared\n"
    assert (prefix / "include" / VERSION / "demo_pkg" / "demo.h").is_file()
    for script in ("raw-tool", "demo-cli"):
        path = prefix / "bin" / script
        assert path.read_bytes().startswith(f"#!{python}\n".encode())
        assert os.stat(path).st_mode & 0o777 == 0o755
        env = {**os.environ, "PYTHONPATH": str(site)}  # the stand-in's own sys.prefix is not ours
        run = subprocess.run([str(path)], capture_output=True, text=True, env=env, check=False)
        assert run.stdout.strip() == "demo says hi", run.stderr
    assert os.stat(site / "demo/__init__.py").st_mode & 0o777 == 0o644

    pycs = sorted((site / "demo/__pycache__").glob("*.pyc"))
    assert [p.name.split(".")[0] for p in pycs] == ["__init__"]
    assert int.from_bytes(pycs[0].read_bytes()[4:8], "little") == 3  # checked-hash

    dist_info = "demo_pkg-1.0.dist-info"
    assert (site / dist_info / "INSTALLER").read_text() == INSTALLER_NAME
    record = _record(site, dist_info)
    rows = list(record)
    assert rows[-1] == f"{dist_info}/RECORD" and rows[:-1] == sorted(rows[:-1])
    installed = {
        os.path.relpath(p, site) for p in prefix.rglob("*")
        if p.is_file() and p.name != "python"
    }  # fmt: skip
    assert installed == set(record)  # every file written is listed, nothing else is
    for rel, (digest, size) in record.items():
        if rel.endswith("/RECORD"):
            assert digest == size == ""
            continue
        path = site / rel
        assert (digest, size) == (_sha(path), str(path.stat().st_size)), rel


def test_a_member_outside_its_folder_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    prefix, site, python = _prefix(tmp_path)
    good = make_wheel(tmp_path / "wheels", "good", "1.0", {"good.py": "X = 1\n"})
    evil = make_wheel(
        tmp_path / "wheels", "evil", "1.0", {"evil-1.0.data/data/../../escape.txt": "x"}
    )
    with pytest.raises(IntegrityError, match=r"evil-1\.0-py3-none-any\.whl.*outside"):
        install_wheels([good, evil], prefix, python, interpreter_env(), jobs=2)
    assert not list(site.iterdir()) and not (tmp_path / "escape.txt").exists()


def test_a_wheel_without_one_dist_info_is_refused(tmp_path: Path) -> None:
    prefix, _site, python = _prefix(tmp_path)
    wheel = tmp_path / "bare-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("bare.py", "X = 1\n")
    with pytest.raises(IntegrityError, match=r"bare-1\.0-py3-none-any\.whl.*0 \.dist-info"):
        install_wheels([wheel], prefix, python, interpreter_env())


def test_a_file_hard_linked_elsewhere_is_replaced_not_written_through(tmp_path: Path) -> None:
    prefix, site, python = _prefix(tmp_path)
    cached = tmp_path / "rattler-cache-copy.py"
    cached.write_text("WHO = 'conda'\n")
    os.link(cached, site / "shared_mod.py")
    wheel = make_wheel(tmp_path / "wheels", "over", "1.0", {"shared_mod.py": "WHO = 'pip'\n"})
    install_wheels([wheel], prefix, python, interpreter_env())
    assert (site / "shared_mod.py").read_text() == "WHO = 'pip'\n"
    assert cached.read_text() == "WHO = 'conda'\n"


def test_a_long_interpreter_path_gets_the_sh_trampoline() -> None:
    long_python = Path("/" + "p" * MAX_SHEBANG) / "bin/python"
    line = shebang(long_python).decode()
    assert line.startswith("#!/bin/sh\n") and f'"{long_python}"' in line
    assert shebang(Path("/opt/conda/envs/lockdock/bin/python")) == (
        b"#!/opt/conda/envs/lockdock/bin/python\n"
    )


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        os.path.relpath(p, root): (os.lstat(p).st_mode, p.read_bytes())
        for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    }  # fmt: skip


def _entry_of(cache: Path, place: Path) -> Path:
    """The entry whose pycs name sources under ``place``."""
    for entry in cache.iterdir():
        for pyc in entry.glob("files/**/*.pyc"):
            if str(place) in pyc.read_bytes().decode("latin-1"):
                return entry
    raise AssertionError(f"no cache entry for {place}")


def test_a_warm_pyc_cache_gives_the_files_compiling_gives_and_compiles_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = make_wheel(tmp_path / "wheels", "cached", "1.0", {
        "cached/__init__.py": "VALUE = {'a', 'b', 'c'}\n",
        "cached/sub/mod.py": "def f():\n    return 'x' in {'x', 'y'}\n",
        "cached/bad.py": "def (:\n",
    })  # fmt: skip
    digest = {wheel: hashlib.sha256(wheel.read_bytes()).hexdigest()}
    cache, place = tmp_path / "pyc-cache", tmp_path / "place"

    def fresh_prefix() -> tuple[Path, Path, Path]:  # one path: a pyc names its source's path
        shutil.rmtree(place, ignore_errors=True)
        return _prefix(place)

    trees = []
    for run in ("no-cache", "cold", "warm"):
        prefix, _site, python = fresh_prefix()
        install_wheels([wheel], prefix, python, interpreter_env(), jobs=2,
                       pyc_cache=None if run == "no-cache" else cache, sha256=digest)
        trees.append(_tree(prefix / "lib"))
    assert "pyc cache: 1 of 1 wheel(s) needed no compiling" in capsys.readouterr().err
    assert trees[0] == trees[1] == trees[2]
    assert any(rel.endswith(".pyc") for rel in trees[2])

    # another prefix path is another entry: its pycs name other paths
    _prefix(tmp_path / "elsewhere")
    install_wheels([wheel], tmp_path / "elsewhere/env", tmp_path / "elsewhere/env/bin/python",
                   interpreter_env(), pyc_cache=cache, sha256=digest)
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2
    shutil.rmtree(next(p for p in cache.iterdir() if p != _entry_of(cache, place)))

    # a warm entry is used: a pyc put there by hand comes back (so nothing was compiled)
    entry = _entry_of(cache, place)
    (marked,) = entry.glob("files/cached/sub/__pycache__/mod.*.pyc")
    planted = marked.read_bytes()[:16] + b"from the cache"  # this interpreter's header
    marked.write_bytes(planted)
    prefix, site, python = fresh_prefix()
    install_wheels([wheel], prefix, python, interpreter_env(), pyc_cache=cache, sha256=digest)
    assert (site / marked.relative_to(entry / "files")).read_bytes() == planted

    # an entry that cannot be read is a miss: compiled again, same files as without a cache
    (entry / "pycs.json").write_text("{not json")
    prefix, _site, python = fresh_prefix()
    install_wheels([wheel], prefix, python, interpreter_env(), pyc_cache=cache, sha256=digest)
    assert _tree(prefix / "lib") == trees[0]


def test_a_file_two_wheels_ship_is_the_later_wheels_and_in_both_records(tmp_path: Path) -> None:
    prefix, site, python = _prefix(tmp_path)
    init = "ns/__init__.py"
    first = make_wheel(tmp_path / "wheels", "ns-a", "1.0",
                       {init: "# a\n", "ns/a.py": "A = 1\n"})  # fmt: skip
    second = make_wheel(tmp_path / "wheels", "ns-b", "1.0",
                        {init: "# b\n", "ns/b.py": "B = 1\n"})  # fmt: skip
    install_wheels([first, second], prefix, python, interpreter_env(), jobs=2)
    assert (site / init).read_text() == "# b\n"
    assert init in _record(site, "ns_a-1.0.dist-info")
    assert init in _record(site, "ns_b-1.0.dist-info")
    assert (site / "ns/a.py").is_file() and (site / "ns/b.py").is_file()


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ({"odd-1.0.data/config/x.ini": "x"}, "in no scheme"),
        ({"odd.py": "X = 1\n", "odd-1.0.data/purelib/odd.py": "X = 2\n"}, "are one file"),
    ],
)
def test_a_wheel_whose_members_collide_or_have_no_scheme_is_refused(
    tmp_path: Path, members: dict[str, str], why: str
) -> None:
    prefix, site, python = _prefix(tmp_path)
    wheel = make_wheel(tmp_path / "wheels", "odd", "1.0", members)
    with pytest.raises(IntegrityError, match=why):
        install_wheels([wheel], prefix, python, interpreter_env())
    assert not list(site.iterdir())


@pytest.mark.parametrize(
    "tamper",
    ["pyc outside __pycache__", "source the wheel lacks", "not a checked-hash pyc", "odd mode"],
)
def test_a_cache_entry_that_does_not_fit_the_wheel_is_a_miss(tmp_path: Path, tamper: str) -> None:
    """A cache mount is shared by every build on a builder: a tampered entry is not used."""
    wheel = make_wheel(tmp_path / "wheels", "fit", "1.0", {"fit/__init__.py": "X = 1\n"})
    digest = {wheel: hashlib.sha256(wheel.read_bytes()).hexdigest()}
    cache, place = tmp_path / "pyc-cache", tmp_path / "place"
    prefix, _site, python = _prefix(place)
    install_wheels([wheel], prefix, python, interpreter_env(), pyc_cache=cache, sha256=digest)
    expected = _tree(prefix)
    (entry,) = cache.iterdir()
    index_file = entry / "pycs.json"
    index = json.loads(index_file.read_text())
    ((source, (pyc, mode)),) = index.items()
    if tamper == "pyc outside __pycache__":
        index = {source: ["../../../../escaped.pyc", mode]}
        (entry / "escaped.pyc").write_bytes((entry / "files" / pyc).read_bytes())
    elif tamper == "source the wheel lacks":
        index = {"fit/other.py": [pyc.replace("__init__", "other"), mode]}
    elif tamper == "not a checked-hash pyc":
        (entry / "files" / pyc).write_bytes(b"\0" * 16)
    else:
        index = {source: [pyc, 0o4755]}
    index_file.write_text(json.dumps(index))

    shutil.rmtree(place)
    prefix, _site, python = _prefix(place)
    install_wheels([wheel], prefix, python, interpreter_env(), pyc_cache=cache, sha256=digest)
    assert _tree(prefix) == expected  # compiled again: the files a fresh install gives
    assert not list(tmp_path.rglob("escaped.pyc"))[1:]  # only the planted one, none written


def test_a_compile_worker_that_died_is_reported_with_its_own_error(tmp_path: Path) -> None:
    """Sources are streamed to the worker while the wheels are extracted: one that died must
    fail the install with its exit and stderr, not a broken pipe."""
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho 'this interpreter cannot start' >&2\nexit 3\n")
    python.chmod(0o755)
    with Compilation(python, {}, 2) as compilation:
        compilation.proc.wait()  # dead before the first source arrives
        compilation.submit(tmp_path / f"m{i}.py" for i in range(5000))
        with pytest.raises(InstallError) as caught:
            compilation.result()
    assert "this interpreter cannot start" in str(caught.value)
