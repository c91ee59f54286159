"""Virtual-package parity with conda-lock: each mode hashes as conda-lock hashes it, and
``lock --check`` decides "stale" exactly where ``conda-lock lock --check-input-hash`` would
re-solve. conda-lock's decision is taken from its own ``make_lock_files`` (its solver
replaced by a recorder, so nothing is solved and no conda is needed)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockdock.errors import UsageError
from lockdock.flavors import Flavor
from lockdock.lock import check_flavor, mapping_url, plan_flavor
from lockdock.virtual_packages import VirtualPackageOptions, load_virtual_packages
from tests.data import LARSNET, REALDATA

LARSNET_ENV = REALDATA / "larsnet-midi" / "environment.yml"
#: Its environment.yml has no `platforms:`: the project locks with `-p` (flavor.toml platforms).
LARSNET_PLATFORMS = ("linux-64", "linux-aarch64")
SPEC_FILE = """\
subdirs:
  linux-64:
    packages:
      {__unix: "0", __linux: "5.15", __glibc: "2.31", __cuda: "12.4", __archspec: "1 x86_64"}
  linux-aarch64:
    packages: {__unix: "0", __linux: "5.15", __glibc: "2.31", __archspec: "1 aarch64"}
"""


class _WouldSolve(Exception):
    def __init__(self, platforms: list[str]) -> None:
        super().__init__(platforms)
        self.platforms = platforms


def conda_lock_would_resolve(
    sources: list[Path], lock: Path, options: VirtualPackageOptions,
    monkeypatch: pytest.MonkeyPatch,
) -> set[str]:  # fmt: skip
    """Platforms ``conda-lock lock --check-input-hash`` (same options) would re-solve."""
    import conda_lock.conda_lock as cl

    def record(**kwargs: Any) -> None:
        raise _WouldSolve(list(kwargs["platforms"]))

    monkeypatch.setattr(cl, "create_lockfile_from_spec", record)
    with_cuda = "" if options.without_cuda else options.with_cuda
    if with_cuda == "default":
        with_cuda = None  # no flag at all is how conda-lock means its default
    try:
        cl.make_lock_files(
            conda="/nonexistent/conda", src_files=sources, kinds=["lock"],
            lockfile_path=lock, check_input_hash=True, with_cuda=with_cuda,
            virtual_package_spec=options.spec_file, mapping_url=mapping_url(),
            platform_overrides=LARSNET_PLATFORMS,
        )  # fmt: skip
    except _WouldSolve as solve:
        return set(solve.platforms)
    return set()


def flavor_for(tmp_path: Path, sources: tuple[Path, ...], lock: Path, **kw: Any) -> Flavor:
    fields: dict[str, Any] = dict(
        name="adopted", directory=tmp_path, dockerfile=tmp_path / "Dockerfile",
        accelerator="cpu", parent=None, environment_files=sources,
        virtual_packages_file=None, with_cuda=None, without_cuda=False,
        platforms=LARSNET_PLATFORMS,
        moving_tags=("adopted",), pip_indexes=(), lock_path=lock,
    )  # fmt: skip
    fields.update(kw)
    return Flavor(**fields)


MODES = {
    "conda-lock default": VirtualPackageOptions(with_cuda="default"),
    "--with-cuda 12.0": VirtualPackageOptions(with_cuda="12.0"),
    "--without-cuda": VirtualPackageOptions(without_cuda=True),
    "--virtual-package-spec": VirtualPackageOptions(spec_file=Path("SPEC")),
}


def _resolve(options: VirtualPackageOptions, spec_file: Path) -> VirtualPackageOptions:
    return VirtualPackageOptions(spec_file=spec_file) if options.spec_file else options


def test_real_larsnet_lock_was_made_with_conda_locks_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh plain `conda-lock lock`: lockdock's default calls it stale (as conda-lock
    --without-cuda would); `with-cuda = "default"` adopts it as fresh."""
    lock = tmp_path / "conda-lock.yml"
    shutil.copy(LARSNET, lock)
    sources = (LARSNET_ENV,)
    plain = flavor_for(tmp_path, sources, lock)
    assert {s.platform for s in check_flavor(plain)} == {"linux-64", "linux-aarch64"}
    adopted = flavor_for(tmp_path, sources, lock, with_cuda="default")
    assert check_flavor(adopted) == []
    # the CLI options replace the flavor's setting, both ways
    assert check_flavor(plain, VirtualPackageOptions(with_cuda="default")) == []
    assert len(check_flavor(adopted, VirtualPackageOptions(without_cuda=True))) == 2
    # and conda-lock itself agrees on both
    default = VirtualPackageOptions(with_cuda="default")
    assert conda_lock_would_resolve(list(sources), lock, default, monkeypatch) == set()
    without = VirtualPackageOptions(without_cuda=True)
    assert conda_lock_would_resolve(list(sources), lock, without, monkeypatch) == {
        "linux-64", "linux-aarch64"
    }  # fmt: skip


@pytest.mark.parametrize("locked_with", list(MODES))
def test_check_agrees_with_conda_lock_check_input_hash_for_every_mode(
    locked_with: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock hashed for one mode, checked under every mode, by both tools."""
    spec_file = tmp_path / "virtual-packages.yml"
    spec_file.write_text(SPEC_FILE, encoding="utf-8")
    lock = tmp_path / "conda-lock.yml"
    data = yaml.safe_load(LARSNET.read_text(encoding="utf-8"))
    lock_options = _resolve(MODES[locked_with], spec_file)
    # conda-lock's own hash of this input under that mode (its public API)
    from conda_lock.content_hash import compute_content_hashes
    from conda_lock.src_parser import make_lock_spec
    from conda_lock.virtual_package import (
        default_virtual_package_repodata,
        virtual_package_repo_from_specification,
    )

    spec = make_lock_spec(
        src_files=[LARSNET_ENV], mapping_url=mapping_url(), platform_overrides=LARSNET_PLATFORMS
    )
    if lock_options.spec_file:
        repo = virtual_package_repo_from_specification(spec_file)
    else:
        repo = default_virtual_package_repodata(cuda_version=lock_options.cuda_version)
    data["metadata"]["content_hash"] = dict(compute_content_hashes(spec, repo))
    lock.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    flavor = flavor_for(tmp_path, (LARSNET_ENV,), lock)
    fresh_under = []
    for mode, options in MODES.items():
        options = _resolve(options, spec_file)
        ours = {s.platform for s in check_flavor(flavor, options)}
        theirs = conda_lock_would_resolve([LARSNET_ENV], lock, options, monkeypatch)
        assert ours == theirs, mode
        if not ours:
            fresh_under.append(mode)
    assert fresh_under == [locked_with]  # the modes are distinguishable, and only its own fits


def test_flavor_settings_select_the_mode(tmp_path: Path) -> None:
    spec_file = tmp_path / "virtual-packages.yml"
    spec_file.write_text(SPEC_FILE, encoding="utf-8")
    base = flavor_for(tmp_path, (LARSNET_ENV,), tmp_path / "conda-lock.yml")

    def cuda(options: VirtualPackageOptions) -> str | None:
        return load_virtual_packages(options).version_of("linux-64", "__cuda")

    assert cuda(VirtualPackageOptions.of_flavor(base)) is None
    assert cuda(VirtualPackageOptions(with_cuda="default")) == "11.4"
    with_cuda = flavor_for(tmp_path, (LARSNET_ENV,), base.lock_path, with_cuda="12.0")
    assert cuda(VirtualPackageOptions.of_flavor(with_cuda)) == "12.0"
    with_file = flavor_for(tmp_path, (LARSNET_ENV,), base.lock_path,
                           virtual_packages_file=spec_file)  # fmt: skip
    assert cuda(VirtualPackageOptions.of_flavor(with_file)) == "12.4"
    override = VirtualPackageOptions(without_cuda=True)
    assert cuda(VirtualPackageOptions.of_flavor(with_file, override)) is None
    plan = plan_flavor(with_cuda)
    assert plan.virtual_packages.version_of("linux-aarch64", "__cuda") == "12.0"


def test_options_exclude_each_other() -> None:
    with pytest.raises(UsageError, match="--with-cuda and --without-cuda exclude each other"):
        VirtualPackageOptions(with_cuda="12.0", without_cuda=True)
    with pytest.raises(UsageError, match="needs a version"):
        VirtualPackageOptions(with_cuda=" ")
    assert VirtualPackageOptions(with_cuda="12.0").conda_lock_options() == "--with-cuda 12.0"
    assert VirtualPackageOptions().conda_lock_options() == "--without-cuda"


def test_flavor_platforms_override_the_files_like_dash_p(tmp_path: Path) -> None:
    flavor = flavor_for(tmp_path, (LARSNET_ENV,), tmp_path / "conda-lock.yml",
                        platforms=("linux-64",))  # fmt: skip
    plan = plan_flavor(flavor)
    assert [p.platform for p in plan.platforms] == ["linux-64"]


def test_cli_lock_check_adopts_a_plain_conda_lock_project(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """larsnet-midi as its users have it: `-p` platforms, conda-lock's default __cuda."""
    from lockdock import cli
    from lockdock.testing.flavors import write_flavor

    shutil.copy(LARSNET_ENV, tmp_path / "environment.yml")
    shutil.copy(LARSNET, tmp_path / "conda-lock.yml")
    toml = 'accelerator = "cpu"\ndefault = true\nplatforms = ["linux-64", "linux-aarch64"]\n'
    write_flavor(tmp_path / "images", "cpu", toml)

    def check(*flags: str) -> int:
        with pytest.raises(SystemExit) as done:
            cli.main(["-C", str(tmp_path), "lock", "--check", *flags])
        return int(done.value.code or 0)

    assert check() == 6
    assert "linux-64" in capsys.readouterr().err
    assert check("--with-cuda", "default") == 0
    assert check("--with-cuda", "12.0") == 6
    assert check("--with-cuda", "12.0", "--without-cuda") == 2  # exclusive: usage error
    write_flavor(tmp_path / "images", "cpu", toml + 'with-cuda = "default"\n')
    assert check() == 0
