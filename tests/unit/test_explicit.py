"""Explicit (@EXPLICIT) locks: parsing, hash rules, platform rules, store layout for md5-only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lockdock.errors import IntegrityError, SpecError
from lockdock.installer import store
from lockdock.installer.explicit import is_explicit, parse_explicit
from lockdock.installer.lockfile import LockedArtifact, read_lock
from tests.data import REPO2DOCKER_EXPLICIT

CF = "https://conda.anaconda.org/conda-forge"
MD5 = "c82b1aeb48ef8d5432cbc592716464ba"
SHA = "a" * 64


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "env.lock"
    path.write_text(text, encoding="utf-8")
    return path


def test_real_repo2docker_lock_reads_as_one_platform_with_md5s() -> None:
    lock = read_lock(REPO2DOCKER_EXPLICIT)
    assert lock.platforms == ("linux-aarch64",)
    assert len(lock.artifacts) == 174
    assert lock.content_hash == {
        "linux-aarch64": "e263b45a59d809c19e20cb9963be2bc27bee0b7135e9e5d7b43ae4e6ed990812"
    }
    assert lock.channels == (CF,)
    assert all(a.md5 and len(a.md5) == 32 and a.sha256 is None for a in lock.artifacts)
    assert {a.platform for a in lock.artifacts} == {"linux-aarch64"}
    bzip2 = next(a for a in lock.artifacts if a.name == "bzip2")
    assert (bzip2.version, bzip2.build, bzip2.md5) == (
        "1.0.8", "h4777abc_8", "2921ac0b541bf37c69e66bd6d9a43bca"
    )
    selected = lock.select("linux-aarch64", ["main"])
    assert len(selected) == 174


def test_sha256_fragments_and_pip_lines(tmp_path: Path) -> None:
    lock = read_lock(
        write(
            tmp_path,
            "# platform: linux-64\n@EXPLICIT\n"
            f"{CF}/linux-64/zlib-1.3-h0_0.conda#sha256:{SHA}\n"
            f"{CF}/noarch/six-1.16.0-pyh_0.conda#{'b' * 64}\n"
            f"# pip midiutil @ https://files.example/MIDIUtil-1.2.1.tar.gz#sha256={'c' * 64}\n"
            f"# pip idna @ https://files.example/idna-3.7-py3-none-any.whl#sha256={'d' * 64}\n",
        )
    )
    by_name = {a.name: a for a in lock.artifacts}
    assert by_name["zlib"].sha256 == SHA and by_name["zlib"].md5 is None
    assert by_name["six"].sha256 == "b" * 64
    assert (by_name["midiutil"].manager, by_name["midiutil"].version) == ("pip", "1.2.1")
    assert (by_name["idna"].version, by_name["idna"].sha256) == ("3.7", "d" * 64)
    assert lock.content_hash == {}


def test_platform_inferred_from_urls_when_no_header(tmp_path: Path) -> None:
    lock = read_lock(write(tmp_path, f"@EXPLICIT\n{CF}/osx-arm64/zlib-1.3-h0_0.conda#{MD5}\n"))
    assert lock.platforms == ("osx-arm64",)


def test_no_hashes_refused_saying_lockdock_verifies_every_artifact(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# platform: linux-64\n@EXPLICIT\n"
        f"{CF}/linux-64/zlib-1.3-h0_0.conda\n{CF}/linux-64/xz-5.4-h0_0.conda\n",
    )
    with pytest.raises(IntegrityError, match="verifies every artifact") as caught:
        read_lock(path)
    assert str(path) in str(caught.value) and "zlib-1.3-h0_0.conda" in str(caught.value)
    assert "2 of 2" in str(caught.value)


def test_url_of_another_platform_refused_naming_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# platform: linux-64\n@EXPLICIT\n"
        f"{CF}/linux-64/zlib-1.3-h0_0.conda#{MD5}\n"
        f"{CF}/osx-64/xz-5.4-h0_0.conda#{MD5}\n",
    )
    with pytest.raises(SpecError, match=r"line 4: xz-5\.4-h0_0\.conda is a osx-64 package"):
        read_lock(path)


def test_mixed_platforms_without_header_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"@EXPLICIT\n{CF}/linux-64/a-1-h_0.conda#{MD5}\n{CF}/osx-64/b-1-h_0.conda#{MD5}\n",
    )
    with pytest.raises(SpecError, match="mixes packages of linux-64, osx-64"):
        read_lock(path)


def test_not_a_package_url_refused() -> None:
    with pytest.raises(SpecError, match=r"line 2: .* is not a conda package URL"):
        parse_explicit(Path("x.lock"), "@EXPLICIT\nnumpy=1.26\n")


def test_sniffing(tmp_path: Path) -> None:
    assert is_explicit(REPO2DOCKER_EXPLICIT)
    yaml_lock = tmp_path / "conda-lock.yml"
    yaml_lock.write_text("version: 1\nmetadata: {}\npackage: []\n", encoding="utf-8")
    assert not is_explicit(yaml_lock)
    assert not is_explicit(tmp_path / "absent.lock")


# --- the store holds md5-only entries, verified by md5 --------------------------------------


def md5_only(path: Path) -> LockedArtifact:
    return LockedArtifact(
        name="delta", version="1.0", manager="conda", platform="linux-64",
        url=path.as_uri(), sha256=None, md5=hashlib.md5(path.read_bytes()).hexdigest(),
        categories=frozenset({"main"}),
    )  # fmt: skip


def test_md5_only_conda_entry_is_stored_under_md5_and_verified(tmp_path: Path) -> None:
    upstream = tmp_path / "delta-1.0-h0_0.conda"
    upstream.write_bytes(b"conda archive bytes")
    artifact = md5_only(upstream)
    assert store.relative_path(artifact) == f"md5/{artifact.md5}/delta-1.0-h0_0.conda"
    assert store.expected_digests(artifact) == {"md5": artifact.md5}
    target = tmp_path / "store"
    store.fetch([artifact], target)
    assert store.inventory(target) == {store.relative_path(artifact)}
    assert store.missing_from_store([artifact], target) == []
    store.verify_artifacts([artifact], target)
    store.artifact_path(target, artifact).write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="md5 is"):
        store.verify_artifacts([artifact], target)


def test_entry_with_no_hash_has_no_store_path(tmp_path: Path) -> None:
    artifact = LockedArtifact(
        name="x", version="1", manager="pip", platform="linux-64", url="https://e/x-1.whl",
        sha256=None, md5="0" * 32, categories=frozenset({"main"}),
    )  # fmt: skip
    with pytest.raises(IntegrityError, match="no sha256"):
        store.relative_path(artifact)
    with pytest.raises(IntegrityError, match="no sha256"):
        store.expected_digests(artifact)


def test_missing_list_sorted_by_name_first_20_and_a_count() -> None:
    artifacts = [
        LockedArtifact(
            name=f"pkg{i:02d}", version="1", manager="conda", platform="linux-64",
            url=f"https://e/linux-64/pkg{i:02d}-1-h_0.conda",
            sha256=hashlib.sha256(str(i).encode()).hexdigest(), md5=None,
            categories=frozenset({"main"}),
        )
        for i in reversed(range(57))
    ]  # fmt: skip
    text = store.list_missing(artifacts)
    lines = text.splitlines()
    assert len(lines) == 21
    assert lines[0] == "  - pkg00 1 (conda, pkg00-1-h_0.conda)"
    assert lines[19].startswith("  - pkg19 ")
    assert lines[20] == "  ... and 37 more"
    assert store.list_missing(artifacts[:3]).splitlines()[0].startswith("  - pkg54 ")
