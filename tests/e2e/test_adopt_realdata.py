"""Adopting real conda-lock projects as they are (tests/data: real files, bytes unchanged).

- bodo: three `-f` source files (`category: main` / `dev`, `#[linux64]` selectors,
  `bodo.ai/linux-64::` specs) re-solved against a channel rebuilt from its own lock's
  records give back the lock's package set, category by category;
- repo2docker: an explicit (@EXPLICIT) lock works for sbom / fetch --check / install
  --offline, the last two failing cleanly and naming the missing artifacts;
- larsnet-midi: its pure-Python pip sdist (midiutil) builds into a wheel, twice to one hash.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lockdock.cli import main
from lockdock.installer import store as store_mod
from lockdock.installer.built import read_built, record_path
from lockdock.installer.lockfile import Lock, read_lock
from lockdock.lock import lock_project
from lockdock.mirrors import Mirrors
from lockdock.sdist import SOURCE_DATE_EPOCH, build_sdists, unbuilt
from lockdock.spec import load_project
from lockdock.testing.flavors import STANDARD_FLAVORS, write_flavor
from lockdock.testing.installs import Entry, conda_entry, make_wheel, write_lock
from tests.data import BODO, BODO_SOURCES, LARSNET, REPO2DOCKER_ENV, REPO2DOCKER_EXPLICIT
from tests.e2e.test_install import run_installer
from tests.fixtures.channel import CPU_ENV, ServedChannel, write_project
from tests.fixtures.cpython import InstallChannel
from tests.fixtures.lock_channel import build_lock_channels, locked_set


def run_cli(project: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        main(["-C", str(project), *args])
    return int(exited.value.code or 0)


# --- bodo: N source files, categories, spec channels -------------------------------------


def inconsistent_dev(lock: Lock, platform: str) -> set[tuple[str, str, str]]:
    """Entries the lock marks `dev` although one of its `main` entries depends on them.

    (The conda-lock that wrote bodo's lock did that; conda-lock today, and lockdock, put a
    dependency of a main package into main: installing main alone must work.)"""
    entries = [a for a in lock.artifacts if a.platform == platform and a.manager == "conda"]
    main_needs = {d for a in entries if "main" in a.categories for d in a.dependencies}
    return {
        (a.name, a.version, a.build or "")
        for a in entries
        if a.categories == {"dev"} and a.name in main_needs
    }


def test_bodo_three_files_reproduce_the_locked_set_per_category(tmp_path: Path) -> None:
    recorded = read_lock(BODO)
    channels = build_lock_channels(recorded, ["linux-64"], tmp_path / "channels")
    assert set(channels.folders) == {"conda-forge", "bodo.ai"}
    project = tmp_path / "bodo"
    project.mkdir()
    main_yml, *overlays = BODO_SOURCES
    shutil.copy(main_yml, project / "environment.yml")
    flavor_dir = write_flavor(
        project / "images", "bodo",
        'accelerator = "cpu"\ndefault = true\nenvironment = ["dev.yml", "platform.yml"]\n'
        'platforms = ["linux-64"]\n',
    )  # fmt: skip
    for source in overlays:
        shutil.copy(source, flavor_dir / source.name)
    flavor = load_project(project).flavors["bodo"]
    assert [p.name for p in flavor.environment_files] == ["environment.yml", "dev.yml",
                                                          "platform.yml"]  # fmt: skip
    (result,) = lock_project(load_project(project),
                             mirrors=Mirrors.parse(channels.mirror_options()))  # fmt: skip
    ours = read_lock(result.lock_path)
    assert ours.channels == ("bodo.ai", "conda-forge")
    moved = inconsistent_dev(recorded, "linux-64")
    assert {name for name, _, _ in moved} <= {"setuptools", "pyyaml"}  # what we know of
    want_main = locked_set(recorded, "linux-64", ["main"]) | moved
    want_dev = locked_set(recorded, "linux-64", ["dev"]) - moved
    assert len(want_main) > 400 and len(want_dev) > 60
    assert locked_set(ours, "linux-64", ["main"]) == want_main
    assert locked_set(ours, "linux-64", ["dev"]) == want_dev
    # the custom channel's packages came from it (`bodo.ai/linux-64::pyarrow`)
    pyarrow = next(a for a in ours.artifacts if a.name == "pyarrow")
    assert pyarrow.url.startswith(channels.folders["bodo.ai"].as_uri())


# --- repo2docker: an explicit lock -------------------------------------------------------


@pytest.fixture
def explicit_project(tmp_path: Path) -> Path:
    project = tmp_path / "r2d"
    project.mkdir()
    shutil.copy(REPO2DOCKER_ENV, project / "environment.yml")
    write_flavor(project / "images", "cpu")
    shutil.copy(REPO2DOCKER_EXPLICIT, project / "conda-lock.yml")
    return project


def test_explicit_lock_sbom_fetch_check_and_offline_install(
    explicit_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sbom = tmp_path / "sbom.json"
    assert run_cli(explicit_project, "sbom", "cpu", "--platform", "linux-aarch64",
                   "-o", str(sbom)) == 0  # fmt: skip
    components = json.loads(sbom.read_text(encoding="utf-8"))["components"]
    assert len(components) == 174
    assert all(any(h["alg"] == "MD5" for h in c["hashes"]) for c in components)
    capsys.readouterr()

    assert run_cli(explicit_project, "fetch", "--check") == 7
    err = capsys.readouterr().err
    assert "174 artifact(s) missing from store" in err
    listed = [line for line in err.splitlines() if line.startswith("  - ")]
    assert len(listed) == 20
    assert listed == sorted(listed)
    assert "... and 154 more" in err
    assert "Traceback" not in err

    prefix = tmp_path / "prefix"
    code = run_cli(explicit_project, "install", str(explicit_project / "conda-lock.yml"),
                   "--prefix", str(prefix), "--platform", "linux-aarch64", "--offline")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 7, err
    assert "--offline and 174 artifact(s)" in err and "  - _openmp_mutex 4.5 (conda," in err
    assert not prefix.exists()  # nothing written


# --- larsnet-midi: a pure-Python sdist ---------------------------------------------------


@pytest.mark.network
def test_larsnet_sdist_builds_into_one_reproducible_wheel(tmp_path: Path) -> None:
    lock = read_lock(LARSNET)
    sdists = [a for a in lock.select("linux-64") if a.manager == "pip"
              and not a.filename.endswith(".whl")]  # fmt: skip
    assert [a.name for a in sdists] == ["midiutil"]
    wheels = []
    for attempt in ("a", "b"):
        store = tmp_path / f"store-{attempt}"
        store_mod.fetch(sdists, store)  # the sdist itself, hash-verified
        assert unbuilt(sdists, store) == sdists
        (built,) = build_sdists(sdists, store)
        assert unbuilt(sdists, store) == []
        assert built.wheel_filename == "midiutil-1.2.1-py3-none-any.whl"
        path = store_mod.artifact_path(store, built.artifact)
        assert store_mod.verify_file(built.artifact, path) is None
        record = json.loads(record_path(store, sdists[0].sha256 or "").read_text())
        assert record["build"]["source_date_epoch"] == SOURCE_DATE_EPOCH
        assert any("--hash=sha256:" in r for r in record["build"]["requirements"])
        assert read_built(store, sdists[0]) == built
        wheels.append(built.wheel_sha256)
        # building again is a no-op: the record and the wheel are there
        assert build_sdists(sdists, store) == [built]
    assert wheels[0] == wheels[1]


# --- pip-repositories / pip-indexes: honoured ------------------------------------------


@pytest.mark.network
def test_pip_repositories_and_flavor_pip_indexes_are_honoured(
    tmp_path: Path, served_channel: ServedChannel
) -> None:
    """A wheel only on a local index is locked from it (PyPI stays the fallback)."""
    index = tmp_path / "index"
    for name in ("only-here", "also-here"):
        folder = index / name
        folder.mkdir(parents=True)
        wheel = make_wheel(folder, name.replace("-", "_"), "1.0",
                           {f"{name.replace('-', '_')}/__init__.py": ""})  # fmt: skip
        (folder / "index.html").write_text(
            f'<html><body><a href="{wheel.name}">{wheel.name}</a></body></html>\n',
            encoding="utf-8",
        )
    environment = CPU_ENV.format(channel=served_channel.url) + (
        "  - pip\n  - pip:\n    - only-here\n"
        f"pip-repositories:\n  - {index.as_uri()}\n"
    )
    project = write_project(tmp_path / "p", environment)
    (result,) = lock_project(load_project(project))
    pip = {a.name: a for a in read_lock(result.lock_path).select("linux-64")
           if a.manager == "pip"}  # fmt: skip
    assert pip["only-here"].url == (index / "only-here" / "only_here-1.0-py3-none-any.whl").as_uri()
    # the same through flavor.toml `pip-indexes`
    flavor_toml = STANDARD_FLAVORS["cpu"] + f'pip-indexes = ["{index.as_uri()}"]\n'
    environment = CPU_ENV.format(channel=served_channel.url) + (
        "  - pip\n  - pip:\n    - also-here\n"
    )
    project = write_project(tmp_path / "q", environment, {"cpu": {"flavor.toml": flavor_toml}})
    (result,) = lock_project(load_project(project))
    urls = [a.url for a in read_lock(result.lock_path).select("linux-64") if a.manager == "pip"]
    assert urls == [(index / "also-here" / "also_here-1.0-py3-none-any.whl").as_uri()]


@pytest.mark.network
def test_locked_sdist_installs_offline_from_the_wheel_fetch_built(
    tmp_path: Path, install_channel: InstallChannel
) -> None:
    """python (conda) + larsnet's midiutil sdist: fetch downloads and builds it; the installer,
    offline and unable to import anything but its own dependencies, installs the built wheel;
    before the build it refuses (exit 8) saying to run `lockdock fetch`."""
    (midiutil,) = [a for a in read_lock(LARSNET).select("linux-64") if a.name == "midiutil"]
    downloaded = tmp_path / "dl"
    store_mod.fetch([midiutil], downloaded)
    sdist_file = store_mod.artifact_path(downloaded, midiutil)
    lock = write_lock(
        tmp_path / "conda-lock.yml",
        [conda_entry(install_channel.packages["python"], install_channel.package_url("python")),
         Entry(sdist_file, midiutil.url, "pip", "midiutil", "1.2.1")],
        channels=(install_channel.url,),
    )  # fmt: skip
    target = tmp_path / "store"
    store_mod.fetch(store_mod.lock_artifacts(read_lock(lock)), target)
    prefix = tmp_path / "env"
    before = run_installer(lock, "--prefix", prefix, "--store", target, "--offline",
                           "--platform", "linux-64")  # fmt: skip
    assert before.returncode == 8, before.stderr
    assert "no wheel built" in before.stderr and "lockdock fetch" in before.stderr
    assert not prefix.exists()
    build_sdists(store_mod.lock_artifacts(read_lock(lock)), target)
    done = run_installer(lock, "--prefix", prefix, "--store", target, "--offline",
                         "--platform", "linux-64")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", "import midiutil; print(midiutil.__file__)"],
        capture_output=True, text=True, check=True, env={"PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert out.stdout.startswith(str(prefix))
    verify = run_installer(lock, "--prefix", prefix, "--verify-only", "--platform", "linux-64")
    assert verify.returncode == 0, verify.stderr


@pytest.mark.network
def test_an_sdist_whose_build_fails_is_exit_8_naming_it_and_records_nothing(
    tmp_path: Path,
) -> None:
    import hashlib
    import io
    import tarfile

    from lockdock.errors import InstallError
    from lockdock.installer.lockfile import LockedArtifact
    from lockdock.sdist import ensure_built

    sdist = tmp_path / "broken-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        data = b"raise SystemExit('this package refuses to build')\n"
        info = tarfile.TarInfo("broken-1.0/setup.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    artifact = LockedArtifact(
        name="broken", version="1.0", manager="pip", platform="linux-64", url=sdist.as_uri(),
        sha256=hashlib.sha256(sdist.read_bytes()).hexdigest(), md5=None,
        categories=frozenset({"main"}),
    )  # fmt: skip
    store = tmp_path / "store"
    store_mod.fetch([artifact], store)
    before = store_mod.inventory(store)
    with pytest.raises(InstallError) as caught:
        ensure_built(artifact, store)
    assert caught.value.exit_code == 8
    assert "broken 1.0 (broken-1.0.tar.gz)" in str(caught.value)
    assert "refuses to build" in str(caught.value)
    assert store_mod.inventory(store) == before
    assert not record_path(store, artifact.sha256 or "").exists()
