"""lock.py's adoption rules, offline: N files merged as conda-lock merges `-f` files,
spec channels, pyproject.toml refused, selector warnings summarised in one line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from lockdock.errors import SpecError
from lockdock.flavors import Flavor
from lockdock.lock import plan_flavor, spec_channels, split_channel_subdir
from lockdock.mirrors import Mirrors
from tests.data import BODO_SOURCES


def flavor(tmp_path: Path, sources: tuple[Path, ...], **kw: Any) -> Flavor:
    fields: dict[str, Any] = dict(
        name="f", directory=tmp_path, dockerfile=tmp_path / "Dockerfile", accelerator="cpu",
        parent=None, environment_files=sources, virtual_packages_file=None, with_cuda=None,
        without_cuda=False, platforms=(), moving_tags=("f",), pip_indexes=(),
        lock_path=tmp_path / "conda-lock.yml",
    )  # fmt: skip
    fields.update(kw)
    return Flavor(**fields)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_n_files_merge_in_order_with_categories(tmp_path: Path) -> None:
    files = tuple(
        write(tmp_path / f"{n}.yml", text)
        for n, text in [
            ("a", "channels: [c1]\nplatforms: [linux-64]\ndependencies: [python 3.11.*, hello]\n"),
            ("b", "category: dev\nchannels: [c1]\nplatforms: [linux-64]\n"
                  "dependencies: [pytest, ruff]\n"),
            ("c", "channels: [c1]\nplatforms: [linux-64]\ndependencies: [hello >=2, ruff 0.5]\n"),
        ]
    )  # fmt: skip
    plan = plan_flavor(flavor(tmp_path, files))
    deps = {d.name: d for d in plan.lock_spec.dependencies["linux-64"]}
    assert {n: d.category for n, d in deps.items()} == {
        "python": "main", "hello": "main", "pytest": "dev", "ruff": "main"  # later file wins
    }  # fmt: skip
    assert "hello >=2" in plan.platforms[0].conda_specs


def test_spec_channels_come_after_channels_and_resolve_through_mirrors(tmp_path: Path) -> None:
    env = write(
        tmp_path / "environment.yml",
        "channels: [conda-forge, nvidia]\nplatforms: [linux-64]\n"
        "dependencies: [pytorch::pytorch, nvidia::cuda-runtime, bodo.ai/linux-64::pyarrow]\n",
    )
    mirrors = Mirrors.parse(["pytorch=https://mirror.example/pytorch"])
    plan = plan_flavor(flavor(tmp_path, (env,)), mirrors)
    assert plan.channels == ("conda-forge", "nvidia")
    assert plan.spec_channels == ("pytorch", "bodo.ai")
    assert plan.solve_channels == ("conda-forge", "nvidia", "pytorch", "bodo.ai")
    specs = plan.platforms[0].conda_specs
    assert "https://mirror.example/pytorch::pytorch" in specs
    assert "https://conda.anaconda.org/bodo.ai::pyarrow" in specs  # conda-lock drops /subdir
    assert spec_channels(plan.lock_spec) == ("pytorch", "bodo.ai")
    assert split_channel_subdir("bodo.ai/linux-64") == ("bodo.ai", "linux-64")
    assert split_channel_subdir("https://host/ch/") == ("https://host/ch", None)


def test_spec_channels_do_not_change_conda_locks_content_hash(tmp_path: Path) -> None:
    from conda_lock.content_hash import compute_content_hashes
    from conda_lock.src_parser import make_lock_spec
    from conda_lock.virtual_package import default_virtual_package_repodata

    from lockdock.lock import mapping_url

    text = "channels: [conda-forge]\nplatforms: [linux-64]\ndependencies: [pytorch::pytorch]\n"
    env = write(tmp_path / "environment.yml", text)
    spec = make_lock_spec(src_files=[env], mapping_url=mapping_url())
    theirs = compute_content_hashes(spec, default_virtual_package_repodata(cuda_version=""))
    assert plan_flavor(flavor(tmp_path, (env,))).content_hashes == dict(theirs)


def test_pyproject_sources_are_refused_by_name(tmp_path: Path) -> None:
    pyproject = write(tmp_path / "pyproject.toml", "[tool.conda-lock]\nchannels = ['c']\n")
    with pytest.raises(SpecError, match=r"pyproject\.toml sources are not supported") as caught:
        plan_flavor(flavor(tmp_path, (pyproject,)))
    assert "YAML" not in str(caught.value)


def test_a_source_listed_twice_is_refused(tmp_path: Path) -> None:
    env = write(tmp_path / "environment.yml", "channels: [c]\ndependencies: [hello]\n")
    with pytest.raises(SpecError, match="listed twice"):
        plan_flavor(flavor(tmp_path, (env, env)))


def test_selector_warnings_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    plan_flavor(flavor(tmp_path, BODO_SOURCES, platforms=("linux-64", "osx-arm64")))
    err = capsys.readouterr().err
    assert "filtered out line" not in err + caplog.text
    summary = [line for line in err.splitlines() if "selector" in line]
    assert len(summary) == 1 and "line(s) left out" in summary[0]
