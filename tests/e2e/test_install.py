"""The installer: a real CPython + generic conda packages + wheels from a verified store.

Runs the installer the way image builds do (``python -m lockdock.installer.install`` with
click, rich, conda-lock, docker and pydantic made unimportable) and in-process; every
refusal listed in the issue is injected here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lockdock.cli import main as cli_main
from lockdock.errors import InstallError, IntegrityError, UsageError
from lockdock.installer import install, store
from lockdock.installer import prefix as prefix_mod
from lockdock.installer.lockfile import read_lock
from lockdock.installer.pip_install import interpreter_env
from lockdock.testing.installs import (
    conda_entry,
    make_wheel,
    manifest_difference,
    tree_manifest,
    wheel_entry,
    write_lock,
)
from tests.fixtures.cpython import InstallChannel

FORBIDDEN = ("click", "rich", "conda_lock", "docker", "pydantic", "rattler_build")

#: Runs ``lockdock.installer.install.main`` with the non-installer dependencies made unimportable.
BLOCKED_RUNNER = textwrap.dedent(
    f"""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {FORBIDDEN!r}:
                raise ImportError("blocked in the installer test: " + name)
            return None
    sys.meta_path.insert(0, Block())
    from lockdock.installer.install import main
    sys.exit(main(sys.argv[1:]))
    """
)


def run_installer(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_RUNNER, *map(str, args)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False,
    )  # fmt: skip


def conda_entries(channel: InstallChannel) -> list:  # type: ignore[type-arg]
    return [
        conda_entry(channel.packages[name], channel.package_url(name))
        for name in ("python", "hello", "libnative", "tinylib")
    ]


@pytest.fixture(scope="module")
def small_lock(
    tmp_path_factory: pytest.TempPathFactory,
    install_channel: InstallChannel,
    small_wheels: list[Path],
) -> Path:
    """python + 3 generic conda packages (one noarch: python) + 2 wheels, category main;
    a third wheel in category ``dev``."""
    directory = tmp_path_factory.mktemp("small-lock")
    dev = make_wheel(directory / "wheels", "devtool", "0.1", {"devtool.py": "X = 1\n"})
    entries = [
        *conda_entries(install_channel),
        *(wheel_entry(w) for w in small_wheels),
        wheel_entry(dev, categories=("dev",)),
    ]
    return write_lock(directory / "conda-lock.yml", entries, channels=(install_channel.url,))


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory: pytest.TempPathFactory, small_lock: Path) -> Path:
    target = tmp_path_factory.mktemp("filled") / "store"
    store.fetch(store.lock_artifacts(read_lock(small_lock)), target)
    return target


def copy_store(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


def run_in_prefix(prefix: Path, code: str) -> str:
    proc = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", code],
        capture_output=True, text=True, check=True,
        env={**interpreter_env(), "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    return proc.stdout


# --- pure planning ------------------------------------------------------------------------


def test_diff_prefix_reports_missing_extra_and_different(small_lock: Path) -> None:
    artifacts = read_lock(small_lock).select("linux-64", ["main"])
    conda = {a.name: (a.version, a.build or "") for a in artifacts if a.manager == "conda"}
    pip = {prefix_mod.canonical_pip_name(a.name): a.version
           for a in artifacts if a.manager == "pip"}
    assert prefix_mod.diff_prefix(artifacts, conda, pip).ok

    conda_bad = {**conda, "stray": ("1", "0")}
    conda_bad.pop("hello")
    conda_bad["libnative"] = ("1.0", "h2_0")
    pip_bad = {**pip, "intruder": "9"}
    pip_bad["tinywheel"] = "1.1"
    diff = prefix_mod.diff_prefix(artifacts, conda_bad, pip_bad)
    assert diff.missing == ["hello 1.0 0 (conda)"]
    assert diff.extra == ["stray 1 0 (conda)", "intruder 9 (pip)"]
    assert diff.different == [
        "libnative (conda): installed 1.0 h2_0, locked 1.0 h1_0",
        "tinywheel (pip): installed 1.1, locked 1.0",
    ]


def test_pip_versions_match_public_part_of_local_versions() -> None:
    assert prefix_mod.pip_versions_match("2.13.0", "2.13.0+cpu")
    assert prefix_mod.pip_versions_match("2.13.0+cpu", "2.13.0+cpu")
    assert not prefix_mod.pip_versions_match("2.13.0+cpu", "2.13.0+cu126")
    assert not prefix_mod.pip_versions_match("2.13.0", "2.13.1")


def test_classify_prefix(tmp_path: Path) -> None:
    assert prefix_mod.classify_prefix(tmp_path / "new") == "absent"
    (tmp_path / "empty").mkdir()
    assert prefix_mod.classify_prefix(tmp_path / "empty") == "empty"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    assert prefix_mod.classify_prefix(tmp_path / "data") == "foreign"
    (tmp_path / "env" / "conda-meta").mkdir(parents=True)
    assert prefix_mod.classify_prefix(tmp_path / "env") == "conda"
    (tmp_path / "env" / "conda-meta" / prefix_mod.INCOMPLETE_MARKER).write_text("")
    assert prefix_mod.classify_prefix(tmp_path / "env") == "interrupted"


def test_cpython_package_marks_only_text_files_with_the_old_prefix(
    install_channel: InstallChannel,
) -> None:
    import tarfile

    with tarfile.open(install_channel.packages["python"], "r:bz2") as archive:
        paths = json.load(archive.extractfile("info/paths.json"))  # type: ignore[arg-type]
        marked = [e for e in paths["paths"] if "prefix_placeholder" in e]
        assert marked, "the sysconfig data names the build prefix and must be relocated"
        assert {e["file_mode"] for e in marked} == {"text"}
        assert any("_sysconfigdata_" in e["_path"] for e in marked)
        for entry in marked:
            data = archive.extractfile(entry["_path"]).read()  # type: ignore[union-attr]
            assert b"\0" not in data and entry["prefix_placeholder"].encode() in data
            assert not data.startswith(b"\x7fELF")


def test_cpython_packaging_problem_names_the_reason() -> None:
    from dataclasses import replace

    from lockdock.testing.cpython import packaging_problem, running_interpreter

    interp = running_interpreter()
    problem = packaging_problem(interp)
    if problem:
        pytest.skip(f"this interpreter cannot be packaged anyway: {problem}")
    assert "libpython" in (packaging_problem(replace(interp, libraries=())) or "")
    missing_exe = replace(interp, executable=Path("/nonexistent/python3"))
    assert "/nonexistent/python3 does not exist" in (packaging_problem(missing_exe) or "")


# --- installing -------------------------------------------------------------------------


def test_install_downloads_installs_and_verifies_a_working_prefix(
    small_lock: Path, tmp_path: Path, install_channel: InstallChannel
) -> None:
    prefix, target = tmp_path / "env", tmp_path / "store"
    proc = run_installer(
        small_lock, "--prefix", prefix, "--store", target, "--platform", "linux-64"
    )
    assert proc.returncode == 0, proc.stderr
    assert "verified against the lock" in proc.stderr
    assert len(store.inventory(target)) == 6  # fetched what the store lacked (main only)

    out = run_in_prefix(
        prefix,
        "import sys, ssl, sqlite3, ctypes, tinylib, tinywheel, other_wheel;"
        "print(sys.prefix, tinylib.ANSWER, other_wheel.VALUE); print(sys.version)",
    )
    first, version = out.splitlines()
    assert first.split() == [str(prefix), "42", "other"]
    assert version == sys.version  # the packaged interpreter is this one, strings intact
    script = subprocess.run([str(prefix / "bin" / "tiny")], capture_output=True, text=True)
    assert script.stdout.strip() == "tiny"
    pip_check = run_in_prefix(prefix, "import pip; print(pip.__version__)")
    assert pip_check.strip()

    prefix_mod.verify_prefix(small_lock, prefix, "linux-64")
    verify = run_installer(
        small_lock, "--prefix", prefix, "--verify-only", "--platform", "linux-64"
    )
    assert verify.returncode == 0, verify.stderr
    assert not (prefix / "conda-meta" / prefix_mod.INCOMPLETE_MARKER).exists()
    assert not (prefix / "lib/python3.11/site-packages/devtool.py").exists()  # category dev

    # conda-meta names where packages came from, not the store or the rattler cache.
    record = json.loads(next((prefix / "conda-meta").glob("hello-*.json")).read_text())
    assert record["url"] == install_channel.package_url("hello")
    assert record["channel"] == install_channel.url
    assert "extracted_package_dir" not in record and "link" not in record
    text = "\n".join(p.read_text() for p in (prefix / "conda-meta").glob("*.json"))
    assert str(target) not in text and "lockdock-cache" not in text
    assert not list(prefix.parent.glob(".env.lockdock-cache.*"))

    # pip wrote checked-hash pycs (flags == 3) for what it installed: no timestamps inside.
    pycs = list((prefix / "lib/python3.11/site-packages").glob("**/tinywheel*.pyc"))
    pycs += list((prefix / "lib/python3.11/site-packages").glob("__pycache__/other_wheel*.pyc"))
    assert pycs and all(int.from_bytes(p.read_bytes()[4:8], "little") == 3 for p in pycs)


def test_two_installs_into_one_path_are_byte_identical(
    small_lock: Path, filled_store: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "env"
    install.install(small_lock, prefix, platform="linux-64", store=filled_store, offline=True)
    first = tree_manifest(prefix)
    shutil.rmtree(prefix)
    install.install(small_lock, prefix, platform="linux-64", store=filled_store, offline=True)
    second = tree_manifest(prefix)
    assert first == second, manifest_difference(first, second)
    assert len(first) > 1000  # a real interpreter, not an empty tree

    # Installing again over the finished prefix changes nothing.
    report = install.install(
        small_lock, prefix, platform="linux-64", store=filled_store, offline=True
    )
    assert report.action == "conda"
    third = tree_manifest(prefix)
    assert third == first, manifest_difference(first, third)


def test_categories_select_what_is_installed_and_verified(
    small_lock: Path, filled_store: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "env"
    install.install(
        small_lock, prefix, platform="linux-64", categories=["main", "dev"], store=filled_store,
        offline=True,
    )  # fmt: skip
    assert (prefix / "lib/python3.11/site-packages/devtool.py").is_file()
    prefix_mod.verify_prefix(small_lock, prefix, "linux-64", ["main", "dev"])
    with pytest.raises(IntegrityError, match=r"not in the lock: devtool 0\.1 \(pip\)"):
        prefix_mod.verify_prefix(small_lock, prefix, "linux-64", ["main"])


def test_extra_and_missing_packages_are_caught_and_repaired(
    small_lock: Path, filled_store: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "env"
    install.install(small_lock, prefix, platform="linux-64", store=filled_store, offline=True)
    clean = tree_manifest(prefix)
    intruder = make_wheel(tmp_path / "w", "intruder", "9.0", {"intruder.py": ""})
    subprocess.run(
        [str(prefix / "bin/python"), "-m", "pip", "install", "--no-index", str(intruder)],
        env=interpreter_env(), check=True, capture_output=True,
    )  # fmt: skip
    next((prefix / "conda-meta").glob("hello-*.json")).unlink()
    with pytest.raises(IntegrityError) as caught:
        prefix_mod.verify_prefix(small_lock, prefix, "linux-64")
    assert "missing: hello 1.0 0 (conda)" in str(caught.value)
    assert "not in the lock: intruder 9.0 (pip)" in str(caught.value)
    assert subprocess.run(
        [sys.executable, "-m", "lockdock.installer.install", str(small_lock),
         "--prefix", str(prefix), "--verify-only", "--platform", "linux-64"], capture_output=True,
    ).returncode == IntegrityError.exit_code  # fmt: skip

    install.install(small_lock, prefix, platform="linux-64", store=filled_store, offline=True)
    prefix_mod.verify_prefix(small_lock, prefix, "linux-64")
    repaired = tree_manifest(prefix)
    assert repaired == clean, manifest_difference(clean, repaired)


# --- refusals -----------------------------------------------------------------------------


def test_flipped_byte_in_store_is_refused_before_the_prefix_is_touched(
    small_lock: Path, filled_store: Path, tmp_path: Path
) -> None:
    target = copy_store(filled_store, tmp_path / "store")
    python = next(a for a in read_lock(small_lock).artifacts if a.name == "python")
    stored = store.artifact_path(target, python)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    actual = store.file_digests(stored)["sha256"]

    prefix = tmp_path / "env"
    proc = run_installer(
        small_lock, "--prefix", prefix, "--store", target, "--offline", "--platform", "linux-64"
    )
    assert proc.returncode == IntegrityError.exit_code
    assert "python 3.11" in proc.stderr and python.sha256 in proc.stderr and actual in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not prefix.exists()


def test_offline_with_missing_artifacts_lists_all_of_them(
    small_lock: Path, filled_store: Path, tmp_path: Path
) -> None:
    target = copy_store(filled_store, tmp_path / "store")
    artifacts = read_lock(small_lock).select("linux-64", ["main"])
    gone = [a for a in artifacts if a.name in ("hello", "tinywheel")]
    for artifact in gone:
        shutil.rmtree(store.artifact_path(target, artifact).parent)
    prefix = tmp_path / "env"
    proc = run_installer(
        small_lock, "--prefix", prefix, "--store", target, "--offline", "--platform", "linux-64"
    )
    assert proc.returncode == IntegrityError.exit_code
    assert proc.stderr.count("lockdock: error:") == 1
    assert "2 artifact(s)" in proc.stderr
    assert all(a.filename in proc.stderr for a in gone)
    assert not prefix.exists()


def test_download_not_matching_the_lock_is_refused_and_not_kept(
    small_lock: Path, tmp_path: Path
) -> None:
    tinywheel = next(a for a in read_lock(small_lock).artifacts if a.name == "tinywheel")
    wrong = "ab" * 32
    lock = tmp_path / "conda-lock.yml"
    lock.write_text(small_lock.read_text().replace(tinywheel.sha256 or "", wrong))
    prefix, target = tmp_path / "env", tmp_path / "store"
    with pytest.raises(IntegrityError) as caught:
        install.install(lock, prefix, platform="linux-64", store=target)
    assert wrong in str(caught.value) and tinywheel.sha256 in str(caught.value)
    assert not (target / "sha256" / wrong).exists()
    assert not prefix.exists()


def test_lock_without_the_platform_or_category_is_a_usage_error(
    small_lock: Path, tmp_path: Path
) -> None:
    proc = run_installer(small_lock, "--prefix", tmp_path / "env", "--platform", "osx-arm64")
    assert proc.returncode == UsageError.exit_code
    assert "no platform 'osx-arm64'" in proc.stderr and "linux-64" in proc.stderr
    proc = run_installer(
        small_lock, "--prefix", tmp_path / "env", "--platform", "linux-64", "--category", "docs"
    )
    assert proc.returncode == UsageError.exit_code
    assert "no category docs" in proc.stderr
    assert not (tmp_path / "env").exists()


def test_existing_directory_that_is_not_a_conda_prefix_is_refused(
    small_lock: Path, filled_store: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "home"
    prefix.mkdir()
    (prefix / "thesis.tex").write_text("precious")
    proc = run_installer(
        small_lock, "--prefix", prefix, "--store", filled_store, "--offline", "--platform",
        "linux-64",
    )  # fmt: skip
    assert proc.returncode == InstallError.exit_code
    assert "not a conda prefix" in proc.stderr
    assert [p.name for p in prefix.iterdir()] == ["thesis.tex"]


@pytest.mark.parametrize("kill_at", ["after-conda", "after-pip"])
def test_interrupted_install_is_redone_by_the_next_run(
    small_lock: Path, filled_store: Path, tmp_path: Path, kill_at: str
) -> None:
    prefix = tmp_path / "env"
    args = (small_lock, "--prefix", prefix, "--store", filled_store, "--offline",
            "--platform", "linux-64")  # fmt: skip
    assert run_installer(*args).returncode == 0
    clean = tree_manifest(prefix)
    shutil.rmtree(prefix)

    killed = run_installer(*args, env={install.FAULT_ENV: kill_at})
    assert killed.returncode == -signal.SIGKILL
    assert (prefix / "conda-meta" / prefix_mod.INCOMPLETE_MARKER).exists()
    with pytest.raises(IntegrityError, match="interrupted install"):
        prefix_mod.verify_prefix(small_lock, prefix, "linux-64")

    rerun = run_installer(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "interrupted install" in rerun.stderr
    redone = tree_manifest(prefix)
    assert redone == clean, manifest_difference(clean, redone)
    assert not list(tmp_path.glob(".env.lockdock-cache.*"))  # the killed run's cache is swept


def test_cli_install_and_verify_only(
    small_lock: Path, filled_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "env"
    base = ["-C", str(tmp_path), "install", str(small_lock), "--prefix", str(prefix),
            "--platform", "linux-64"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        cli_main([*base, "--store", str(filled_store), "--offline"])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        cli_main([*base, "--verify-only"])
    assert done.value.code == 0
    assert "matches" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # default store: <project>/.lockdock/store
        cli_main([*base, "--offline", "--category", "dev"])
    assert done.value.code == IntegrityError.exit_code
