"""Pure parts of locking: mirrors, wheel tags, uv output parsing, real-world content hashes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lockdock.errors import SolveError, UsageError
from lockdock.lock import check_locks
from lockdock.mirrors import DEFAULT_CHANNEL_ALIAS, Mirrors
from lockdock.pip_resolve import (
    PipTarget,
    ProvidedDistribution,
    choose_wheel,
    parse_pylock,
    parse_via_graph,
    split_provided,
)
from lockdock.spec import load_project
from lockdock.testing.flavors import write_flavor
from tests.data import REALDATA


def test_mirrors_resolve_names_urls_and_paths(tmp_path: Path) -> None:
    mirrors = Mirrors.from_sources(
        ["conda-forge=http://127.0.0.1:8080/cf/", f"local={tmp_path}"],
        {"LOCKDOCK_MIRRORS": "conda-forge=https://ignored.example bioconda=https://b.example"},
    )
    assert mirrors.resolve("conda-forge") == "http://127.0.0.1:8080/cf"  # option wins
    assert mirrors.resolve("bioconda") == "https://b.example"
    assert mirrors.resolve("local") == tmp_path.as_uri()
    assert mirrors.resolve("pytorch") == f"{DEFAULT_CHANNEL_ALIAS}/pytorch"
    assert mirrors.resolve("https://x.example/ch/") == "https://x.example/ch"
    with pytest.raises(UsageError):
        Mirrors.parse(["conda-forge"])


def test_uv_platform_is_bounded_by_glibc() -> None:
    assert PipTarget("linux-64", "3.12.7", (2, 28)).uv_platform() == "x86_64-manylinux_2_28"
    assert PipTarget("linux-64", "3.12.7", (2, 30)).uv_platform() == "x86_64-manylinux_2_28"
    assert PipTarget("linux-aarch64", "3.12", (2, 17)).uv_platform() == "aarch64-manylinux_2_17"
    assert PipTarget("linux-aarch64", "3.12", (2, 35)).uv_platform() == "aarch64-manylinux_2_35"
    with pytest.raises(SolveError, match=r"glibc 2\.17 or newer"):
        PipTarget("linux-64", "3.12", (2, 12)).uv_platform()
    with pytest.raises(SolveError, match="linux-ppc64le"):
        PipTarget("linux-ppc64le", "3.12", (2, 28)).uv_platform()


WHEELS = [
    ("https://x/pkg-1.0-py3-none-any.whl", "a" * 64),
    ("https://x/pkg-1.0-cp311-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "b" * 64),
    ("https://x/pkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", "c" * 64),
    ("https://x/pkg-1.0-cp311-cp311-manylinux_2_34_x86_64.whl", "d" * 64),
    ("https://x/pkg-1.0-cp311-cp311-manylinux_2_28_aarch64.whl", "e" * 64),
    ("https://x/pkg-1.0-cp312-cp312-manylinux_2_28_x86_64.whl", "f" * 64),
]


def test_choose_wheel_takes_pips_best_tag_within_glibc() -> None:
    target = PipTarget("linux-64", "3.11.9", (2, 28))
    assert choose_wheel(WHEELS, target, "pkg")[1] == "c" * 64  # 2_34 is beyond __glibc 2.28
    assert choose_wheel(WHEELS, PipTarget("linux-64", "3.11.9", (2, 34)), "pkg")[1] == "d" * 64
    assert choose_wheel(WHEELS, PipTarget("linux-aarch64", "3.11", (2, 28)), "p")[1] == "e" * 64
    assert choose_wheel(WHEELS, PipTarget("linux-64", "3.12.1", (2, 28)), "p")[1] == "f" * 64
    # only abi3 and pure wheels: abi3 ranks above py3-none-any
    assert choose_wheel(WHEELS[:2], PipTarget("linux-64", "3.13.0", (2, 28)), "p")[1] == "b" * 64
    with pytest.raises(SolveError, match="no wheel for platform linux-64"):
        choose_wheel(WHEELS[4:5], target, "pkg")


def test_parse_pylock_drops_conda_provided_stubs() -> None:
    text = """
lock-version = "1.0"
[[packages]]
name = "Requests"
version = "2.32.3"
wheels = [{ url = "https://x/requests-2.32.3-py3-none-any.whl", hashes = { sha256 = "SHA1" } }]
[[packages]]
name = "numpy"
version = "2.1.0"
wheels = [{ url = "file:///tmp/stub/numpy-2.1.0-py3-none-any.whl", hashes = { sha256 = "SHA2" } }]
""".replace("SHA1", "1" * 64).replace("SHA2", "2" * 64)
    (only,) = parse_pylock(text, PipTarget("linux-64", "3.11", (2, 28)), {"numpy"})
    assert (only.name, only.version, only.sha256) == ("requests", "2.32.3", "1" * 64)


def test_parse_via_graph_inverts_uv_annotations() -> None:
    line_style = (
        "certifi==2024.8.30       # via requests\n"
        "idna==3.7                # via requests, yarl\n"
        "requests==2.32.3         # via -r requirements.in\n"
        "yarl==1.9                # via -r requirements.in\n"
    )
    split_style = (
        "idna==3.7\n    # via\n    #   requests\n    #   yarl\nrequests==2.32.3\n"
        "    # via -r requirements.in\n"
    )
    graph = parse_via_graph(line_style)
    assert graph["requests"] == {"certifi", "idna"}
    assert graph["yarl"] == {"idna"}
    assert graph["idna"] == set()
    assert parse_via_graph(split_style)["yarl"] == {"idna"}


def test_split_provided_excludes_non_pep440_versions() -> None:
    stubs, excluded = split_provided(
        [ProvidedDistribution("Torch", "2.5.1"), ProvidedDistribution("weird", "1.0_abc_x"),
         ProvidedDistribution("torch", "2.5.1")]
    )  # fmt: skip
    assert stubs == [ProvidedDistribution("torch", "2.5.1")]
    assert excluded == ["weird"]


# --- real-world lock: conda-lock wrote it; our check must agree ---------------------------

# conda-lock's default linux virtual packages (default-virtual-packages.yaml, __cuda 11.4
# included): what larsnet-midi's lock was made with.
CONDA_LOCK_DEFAULT_LINUX = """\
subdirs:
  linux-64:
    packages: {__unix: "0", __linux: "5.10", __archspec: "1 x86_64", __glibc: "2.28",
               __cuda: "11.4"}
  linux-aarch64:
    packages: {__unix: "0", __linux: "5.10", __archspec: "1 aarch64", __glibc: "2.28",
               __cuda: "11.4"}
"""


def test_check_agrees_with_a_real_conda_lock_file(tmp_path: Path) -> None:
    """larsnet-midi's conda-lock.yml (made by conda-lock with ``-p linux-64 -p linux-aarch64``)
    is fresh for its environment.yml by our offline check, with our shipped PyPI mapping;
    and an edit makes it stale. ``platforms:`` is added because the original passed them on
    the command line; the content hash does not cover that key."""
    source = REALDATA / "larsnet-midi"
    env = (source / "environment.yml").read_text(encoding="utf-8")
    (tmp_path / "environment.yml").write_text(
        env + "\nplatforms:\n  - linux-64\n  - linux-aarch64\n", encoding="utf-8"
    )
    shutil.copy(source / "conda-lock.yml", tmp_path / "conda-lock.yml")
    flavor = write_flavor(tmp_path / "images", "cpu")
    (flavor / "virtual-packages.yml").write_text(CONDA_LOCK_DEFAULT_LINUX)
    project = load_project(tmp_path)
    assert check_locks(project) == []

    (flavor / "virtual-packages.yml").write_text(CONDA_LOCK_DEFAULT_LINUX.replace("11.4", "12.6"))
    assert {s.platform for s in check_locks(project)} == {"linux-64", "linux-aarch64"}
    (flavor / "virtual-packages.yml").write_text(CONDA_LOCK_DEFAULT_LINUX)
    (tmp_path / "environment.yml").write_text(
        env.replace("- tqdm>=4.60.0", "- tqdm>=4.61.0")
        + "\nplatforms:\n  - linux-64\n  - linux-aarch64\n",
        encoding="utf-8",
    )
    assert {s.platform for s in check_locks(project)} == {"linux-64", "linux-aarch64"}
