"""sdists: what counts as pure Python, the built-wheel record, and the installer's substitution."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from lockdock.errors import InstallError, IntegrityError
from lockdock.installer.built import BuiltWheel, is_sdist, read_built, wheels_for_install
from lockdock.installer.lockfile import LockedArtifact
from lockdock.installer.store import artifact_path
from lockdock.sdist import (
    LEGACY_BUILD_REQUIRES,
    _members,
    _wheel_ok,
    build_system,
    build_wheel,
    native_reason,
)


def sdist_artifact(name: str = "midiutil", filename: str = "MIDIUtil-1.2.1.tar.gz",
                   sha256: str = "a" * 64) -> LockedArtifact:  # fmt: skip
    return LockedArtifact(
        name=name, version="1.2.1", manager="pip", platform="linux-64",
        url=f"https://files.example/{filename}", sha256=sha256, md5=None,
        categories=frozenset({"main"}),
    )  # fmt: skip


def make_sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"pkg-1.0/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_pure_python_sdists_pass() -> None:
    setup = {"setup.py": "from setuptools import setup\nsetup(name='pkg')\n"}
    assert native_reason(["pkg-1.0/src/pkg/__init__.py", "pkg-1.0/setup.py"], setup) is None
    hatch = '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
    assert native_reason(["pkg-1.0/pyproject.toml"], {"pyproject.toml": hatch}) is None


@pytest.mark.parametrize(
    ("names", "texts", "reason"),
    [
        (["f-2.0/csrc/flash_api.cpp", "f-2.0/csrc/kernel.cu"], {}, "C++/CUDA sources"),
        (["p-1/p/_speedups.pyx"], {}, "Cython"),
        (["p-1/setup.py"], {"setup.py": "from torch.utils.cpp_extension import CUDAExtension"},
         "CUDAExtension"),
        (["p-1/setup.py"], {"setup.py": "setup(ext_modules=[Extension('x', ['x.c'])])"},
         "ext_modules"),
        (["p-1/pyproject.toml"],
         {"pyproject.toml": '[build-system]\nrequires=["maturin>=1"]\nbuild-backend="maturin"'},
         "maturin"),
    ],
)  # fmt: skip
def test_native_sdists_are_named_with_their_reason(
    names: list[str], texts: dict[str, str], reason: str
) -> None:
    found = native_reason(names, texts)
    assert found is not None and reason in found


def test_build_system_defaults_to_pep517_legacy() -> None:
    assert build_system(None)[0] == LEGACY_BUILD_REQUIRES
    assert build_system("[tool.black]\nline-length = 100\n")[0] == LEGACY_BUILD_REQUIRES
    requires, backend = build_system(
        '[build-system]\nrequires = ["flit_core>=3.4"]\nbuild-backend = "flit_core.buildapi"\n'
    )
    assert (requires, backend) == (("flit_core>=3.4",), "flit_core.buildapi")


def test_members_read_the_top_level_build_files(tmp_path: Path) -> None:
    files = {"setup.py": "setup()\n", "src/setup.py": "nested\n", "a/b.c": ""}
    path = make_sdist(tmp_path / "pkg-1.0.tar.gz", files)
    names, texts = _members(path)
    assert "pkg-1.0/a/b.c" in names and texts == {"setup.py": "setup()\n"}


def test_a_native_sdist_is_refused_before_any_build_naming_it_and_the_way_out(
    tmp_path: Path,
) -> None:
    files = {"setup.py": "setup()\n", "csrc/kernel.cu": "__global__ void k(){}"}
    path = make_sdist(tmp_path / "flash_attn-2.6.3.tar.gz", files)
    artifact = sdist_artifact("flash-attn", "flash_attn-2.6.3.tar.gz")
    out = tmp_path / "out"
    with pytest.raises(InstallError) as caught:
        build_wheel(artifact, path, out)
    text = str(caught.value)
    assert "flash-attn" in text and "CUDA" in text and "kernel.cu" in text
    assert "pip-indexes" in text and "conda package" in text
    assert not out.exists()  # nothing was built or written


def test_wheel_checks() -> None:
    sdist = sdist_artifact()
    assert _wheel_ok("midiutil-1.2.1-py3-none-any.whl", sdist) is None
    assert "platform wheel" in (_wheel_ok("midiutil-1.2.1-cp311-cp311-linux_x86_64.whl", sdist)
                                or "")  # fmt: skip
    assert "version" in (_wheel_ok("midiutil-1.3-py3-none-any.whl", sdist) or "")
    assert "not a wheel of" in (_wheel_ok("other-1.2.1-py3-none-any.whl", sdist) or "")


def test_installer_puts_the_built_wheel_in_the_sdists_place(tmp_path: Path) -> None:
    store = tmp_path / "store"
    wheel_bytes = b"wheel bytes"
    sha = hashlib.sha256(wheel_bytes).hexdigest()
    sdist = sdist_artifact()
    wheel = LockedArtifact(
        name="mido", version="1.3.3", manager="pip", platform="linux-64",
        url="https://files.example/mido-1.3.3-py3-none-any.whl", sha256="b" * 64, md5=None,
        categories=frozenset({"main"}),
    )  # fmt: skip
    assert is_sdist(sdist) and not is_sdist(wheel)
    with pytest.raises(InstallError, match=r"no wheel built .* run `lockdock fetch`"):
        wheels_for_install([sdist, wheel], store, Path("conda-lock.yml"))
    built = BuiltWheel(sdist, "midiutil-1.2.1-py3-none-any.whl", sha, {"python": "3.11"})
    record = store / "built" / f"{sdist.sha256}.json"
    record.parent.mkdir(parents=True)
    record.write_text(built.to_json(), encoding="utf-8")
    assert read_built(store, sdist) == built
    result = wheels_for_install([sdist, wheel], store, Path("conda-lock.yml"))
    assert result[1] == wheel
    stand_in = result[0]
    assert (stand_in.name, stand_in.version, stand_in.sha256) == ("midiutil", "1.2.1", sha)
    assert stand_in.filename == "midiutil-1.2.1-py3-none-any.whl"
    assert artifact_path(store, stand_in) == store / "sha256" / sha / stand_in.filename
    # an image's store context holds the sdist, its built wheel and the record
    from lockdock.installer.built import store_entries

    assert store_entries([sdist, wheel], store) == {
        f"sha256/{sdist.sha256}/MIDIUtil-1.2.1.tar.gz", f"sha256/{sha}/{stand_in.filename}",
        f"built/{sdist.sha256}.json", f"sha256/{'b' * 64}/mido-1.3.3-py3-none-any.whl",
    }  # fmt: skip


def test_a_corrupt_record_is_an_integrity_error(tmp_path: Path) -> None:
    sdist = sdist_artifact()
    record = tmp_path / "built" / f"{sdist.sha256}.json"
    record.parent.mkdir(parents=True)
    record.write_text("{not json", encoding="utf-8")
    with pytest.raises(IntegrityError, match="unreadable"):
        read_built(tmp_path, sdist)


# --- pip indexes (flavor.toml pip-indexes, environment.yml pip-repositories) --------------


def test_pip_indexes_are_honoured_in_order_before_pypi() -> None:
    from lockdock.pip_resolve import index_options

    assert index_options(()) == []
    assert index_options(["https://a.example/simple", "file:///srv/wheels"]) == [
        "--index", "extra1=https://a.example/simple", "--index", "extra2=file:///srv/wheels",
    ]  # fmt: skip
    # allow-pypi-requests: false -> the last index replaces PyPI as the default
    assert index_options(["https://a.example/simple", "https://b.example/simple"], False) == [
        "--index", "extra1=https://a.example/simple",
        "--default-index", "https://b.example/simple",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("indexes", "allow_pypi", "message"),
    [
        (["https://user:$TOKEN@private.example/simple"], True, "credentials"),
        (["ftp://old.example/simple"], True, "not an http"),
        ([], False, "no index to resolve from"),
    ],
)
def test_pip_indexes_lockdock_cannot_honour_are_refused(
    indexes: list[str], allow_pypi: bool, message: str
) -> None:
    from lockdock.errors import SpecError
    from lockdock.pip_resolve import index_options

    with pytest.raises(SpecError, match=message):
        index_options(indexes, allow_pypi)
