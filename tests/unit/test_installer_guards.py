"""Guards of the installer, each the test that fails without it: store file names never
leave the store, and ``install`` ends with "installed == locked" and, when that fails,
leaves the prefix marked incomplete (so the next run redoes it and ``--verify-only`` refuses
it) instead of returning a wrong environment as done."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from lockdock.errors import IntegrityError
from lockdock.installer import install, store
from lockdock.installer import prefix as prefix_mod
from lockdock.installer.lockfile import LockedArtifact
from lockdock.testing.installs import conda_entry, write_lock


def _artifact(url: str) -> LockedArtifact:
    return LockedArtifact(
        name="hello", version="1.0", manager="conda", platform="linux-64", url=url,
        sha256="0" * 64, md5=None, categories=frozenset({"main"}),
    )  # fmt: skip


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/c/linux-64/..%2F..%2F..%2Fescape.conda",  # a slash in the name
        "https://example.org/c/linux-64/sub%2Fhello-1.0-h0_0.conda",
        "https://example.org/c/linux-64/%2E%2E",  # the name is ..
        "https://example.org/c/linux-64/%2E",
        "https://example.org/c/linux-64/",  # no name at all
    ],
)
def test_store_refuses_file_names_that_leave_their_directory(url: str, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="no usable file name"):
        store.artifact_path(tmp_path, _artifact(url))


def test_store_keeps_an_ordinary_name_under_its_hash(tmp_path: Path) -> None:
    artifact = _artifact("https://example.org/c/linux-64/hello-1.0-h0_0.conda")
    path = store.artifact_path(tmp_path, artifact)
    assert path == tmp_path / "sha256" / ("0" * 64) / "hello-1.0-h0_0.conda"


def _locked_prefix(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A lock of one conda package whose file is in the store (hash-verified), a prefix."""
    package = tmp_path / "pkgs" / "hello-1.0-h0_0.conda"
    package.parent.mkdir()
    package.write_bytes(b"not a real archive: the installer step is replaced below\n")
    lock = write_lock(tmp_path / "conda-lock.yml", [conda_entry(package)])
    store_dir = tmp_path / "store"
    (artifact,) = prefix_mod.locked_selection(lock, "linux-64", ("main",))[1]
    target = store.artifact_path(store_dir, artifact)
    target.parent.mkdir(parents=True)
    target.write_bytes(package.read_bytes())
    return lock, store_dir, tmp_path / "env"


def _installs_build(build: str):  # type: ignore[no-untyped-def]
    """An installer step that installs ``hello 1.0`` with ``build`` (a conda-meta record)."""

    def fake_install(conda: Sequence[LockedArtifact], prefix: Path, *args: object) -> None:
        for artifact in conda:
            record = {"name": artifact.name, "version": artifact.version, "build": build,
                      "files": []}  # fmt: skip
            meta = prefix / "conda-meta" / f"{artifact.name}-{artifact.version}-{build}.json"
            meta.write_text(json.dumps(record), encoding="utf-8")

    return fake_install


def test_install_verifies_the_prefix_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock, store_dir, prefix = _locked_prefix(tmp_path)
    monkeypatch.setattr(install, "conda_records", lambda conda, store: [])  # fake archive
    monkeypatch.setattr(install, "_install_conda", _installs_build("h0_0"))  # the control
    report = install.install(lock, prefix, platform="linux-64", store=store_dir, offline=True)
    assert report.conda == 1 and prefix_mod.classify_prefix(prefix) == "conda"
    assert "verify-prefix" in report.seconds


def test_install_that_ends_unlike_the_lock_raises_and_stays_marked_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock, store_dir, prefix = _locked_prefix(tmp_path)
    monkeypatch.setattr(install, "conda_records", lambda conda, store: [])  # fake archive
    monkeypatch.setattr(install, "_install_conda", _installs_build("h9_9"))  # a wrong build
    with pytest.raises(IntegrityError, match=r"different: hello \(conda\): installed 1.0 h9_9"):
        install.install(lock, prefix, platform="linux-64", store=store_dir, offline=True)
    assert (prefix / "conda-meta" / prefix_mod.INCOMPLETE_MARKER).is_file()
    assert prefix_mod.classify_prefix(prefix) == "interrupted"  # the next run starts over
    with pytest.raises(IntegrityError, match="interrupted install"):
        prefix_mod.verify_prefix(lock, prefix, "linux-64")
