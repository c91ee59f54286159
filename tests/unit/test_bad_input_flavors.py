"""Bad virtual-package settings in flavor.toml, virtual-packages.yml and on the command line
(bad-input findings 1-3): exit 3 naming the file and key (exit 2 for a flag), nothing written,
and a flavor's own setting replacing the one it inherits."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockdock.spec import load_project
from lockdock.virtual_packages import (
    VirtualPackageOptions,
    load_virtual_packages,
    virtual_package_problem,
    with_cuda_problem,
)
from tests.unit.test_bad_input import (
    Project,
    assert_clean_failure,
    run_cli,
    snapshot,
)
from tests.unit.test_bad_input import proj as proj  # the fixture, re-exported

CPU = 'accelerator = "cpu"\ndefault = true\n'
CUDA = 'accelerator = "cuda"\nextends = "cpu"\n'
UNIX_VPKGS = 'subdirs:\n  linux-64:\n    packages:\n      __unix: "0"\n'
CUDA_VPKGS = 'subdirs:\n  linux-64:\n    packages:\n      __glibc: "2.28"\n      __cuda: "12.6"\n'


def write(p: Project, relative: str, text: str) -> Path:
    path = p.project / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def add_cuda(p: Project, flavor_toml: str = CUDA) -> None:
    """images/cuda extending cpu, with its own virtual-packages.yml (the repository's layout)."""
    write(p, "images/cuda/Dockerfile", "FROM scratch\n")
    write(p, "images/cuda/flavor.toml", flavor_toml)
    write(p, "images/cuda/virtual-packages.yml", CUDA_VPKGS)


def fails_cleanly(p: Project, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
                  code: int, culprit: str) -> str:
    before = snapshot(p.root)
    exit_code, output = run_cli(["-C", str(p.project), *argv], capsys)
    assert_clean_failure(exit_code, output, code, culprit)
    assert snapshot(p.root) == before
    return output


# --- finding 1: `virtual-packages` naming no file ------------------------------------------


@pytest.mark.parametrize("argv", [("lock", "--check"), ("lock",)], ids=["check", "lock"])
@pytest.mark.parametrize("relative", ["nope.yml", "../../../../etc/nope", "", "."])
def test_virtual_packages_naming_no_file_is_exit_3(
    proj: Project, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], relative: str,
) -> None:
    write(proj, "images/cpu/flavor.toml", f'{CPU}virtual-packages = "{relative}"\n')
    output = fails_cleanly(proj, capsys, argv, 3,
                           f"cpu/flavor.toml: `virtual-packages = {relative!r}` names ")
    assert "which is not a file" in output


# --- finding 2: a child's own setting replaces the inherited one ---------------------------


@pytest.mark.parametrize(("parent", "inherited"), [
    ("without-cuda = true", (None, True)),
    ('with-cuda = "12.0"', ("12.0", False)),
    ('with-cuda = "default"', ("default", False)),
])
def test_own_virtual_packages_yml_replaces_the_parents_cuda_setting(
    proj: Project, capsys: pytest.CaptureFixture[str], parent: str,
    inherited: tuple[str | None, bool],
) -> None:
    write(proj, "images/cpu/flavor.toml", f"{CPU}{parent}\n")
    add_cuda(proj)
    for name, parent_name in (("gpu", "cuda"), ("plain", "cpu")):  # nothing of their own
        write(proj, f"images/{name}/Dockerfile", "FROM scratch\n")
        write(proj, f"images/{name}/flavor.toml", f'extends = "{parent_name}"\n')
    flavors = load_project(proj.project).flavors
    plain = flavors["plain"]  # without a file of its own: the parent's setting
    assert (plain.virtual_packages_file, plain.with_cuda, plain.without_cuda) == (
        None, *inherited)
    for name in ("cuda", "gpu"):  # the grandchild inherits the child's file, nothing else
        flavor = flavors[name]
        assert flavor.virtual_packages_file == proj.project / "images/cuda/virtual-packages.yml"
        assert (flavor.with_cuda, flavor.without_cuda) == (None, False)
        options = VirtualPackageOptions.of_flavor(flavor)
        assert load_virtual_packages(options).version_of("linux-64", "__cuda") == "12.6"
    # the child has no lock yet: stale (6), not a clash of flags nobody passed (2)
    output = fails_cleanly(proj, capsys, ("lock", "--check", "cuda"), 6, "no lock file")
    assert "exclude each other" not in output


@pytest.mark.parametrize("own", ['with-cuda = "12.0"', "without-cuda = true"])
def test_an_own_cuda_key_and_an_own_virtual_packages_yml_are_exit_3(
    proj: Project, capsys: pytest.CaptureFixture[str], own: str,
) -> None:
    add_cuda(proj, f"{CUDA}{own}\n")
    key = own.split(" ", 1)[0]
    output = fails_cleanly(proj, capsys, ("lock", "--check"), 3,
                           f"cuda/flavor.toml: `{key}` and ")
    assert "images/cuda/virtual-packages.yml exclude each other" in output
    assert "--" not in output.split("exclude each other")[0]  # no flag blamed


# --- finding 3: malformed versions and names, one check for all three sources -------------


@pytest.mark.parametrize("value", ["", " ", ">=12", "12.*", "12 a b"])
def test_a_malformed_with_cuda_in_flavor_toml_is_exit_3(
    proj: Project, capsys: pytest.CaptureFixture[str], value: str,
) -> None:
    write(proj, "images/cpu/flavor.toml", f'{CPU}with-cuda = "{value}"\n')
    output = fails_cleanly(proj, capsys, ("lock", "--check"), 3,
                           f"cpu/flavor.toml: `with-cuda = {value!r}` ")
    assert "without-cuda = true" in output


@pytest.mark.parametrize("argv", [("lock", "--check"), ("lock",)], ids=["check", "lock"])
def test_a_malformed_with_cuda_flag_is_exit_2(
    proj: Project, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
) -> None:
    output = fails_cleanly(proj, capsys, (*argv, "--with-cuda", ">=12"), 2,
                           "--with-cuda '>=12' has an invalid version")
    assert "malformed version string" in output


@pytest.mark.parametrize(
    ("entry", "culprit"),
    [
        ('__cuda: ">=12"', "`__cuda: '>=12'` under linux-64 has an invalid version"),
        ('__cuda: ""', "`__cuda: ''` under linux-64 has an invalid version"),
        ('"__cu da": "12"', "`__cu da: '12'` under linux-64 has an invalid name"),
        ('__archspec: "1 x86 64"', "`__archspec: '1 x86 64'` under linux-64 has an invalid "
                                   "build string"),
        ('__glibc: "2_28"', "`__glibc: '2_28'` under linux-64 has a version that is not "
                            "MAJOR.MINOR"),
    ],
)
@pytest.mark.parametrize("argv", [("lock", "--check"), ("lock",)], ids=["check", "lock"])
def test_a_malformed_virtual_packages_yml_entry_is_exit_3(
    proj: Project, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], entry: str,
    culprit: str,
) -> None:
    write(proj, "images/cpu/virtual-packages.yml", f"{UNIX_VPKGS}      {entry}\n")
    fails_cleanly(proj, capsys, argv, 3, f"cpu/virtual-packages.yml: {culprit}")


def test_virtual_package_problem_is_the_solvers_judgement() -> None:
    assert virtual_package_problem("__cuda", "12.6") is None
    assert virtual_package_problem("__archspec", "1 x86_64") is None
    assert virtual_package_problem("__glibc", "2.28") is None
    assert "invalid version" in str(virtual_package_problem("__cuda", ">=12"))
    assert "invalid name" in str(virtual_package_problem("__cu da", "12"))
    assert "invalid build string" in str(virtual_package_problem("__archspec", "1 x y"))
    assert with_cuda_problem("default") is None
    assert with_cuda_problem("12.0") is None
    assert with_cuda_problem(" ") == "is empty"
    assert VirtualPackageOptions(with_cuda="12.0").with_cuda == "12.0"
