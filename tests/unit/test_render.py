"""``lockdock render`` writes what ``conda-lock render`` writes, line for line, on real locks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lockdock import cli
from lockdock.installer.lockfile import read_lock
from lockdock.render import Kind, default_filename, render_categories, render_text
from lockdock.testing.flavors import write_flavor
from tests.data import BODO, LARSNET, PANGEO


def conda_lock_render(lock: Path, platform: str, kind: Kind, dev: bool = True) -> str:
    """conda-lock's own render of ``lock`` (what `conda-lock render --kind KIND` writes)."""
    from conda_lock.conda_lock import render_lockfile_for_platform
    from conda_lock.lockfile import parse_conda_lock_file

    lines = render_lockfile_for_platform(
        lockfile=parse_conda_lock_file(lock), include_dev_dependencies=dev, extras=None,
        kind=kind, platform=platform, suppress_warning_for_pip_and_explicit=True,
    )  # fmt: skip
    return "\n".join(lines) + "\n"


CASES = [
    (LARSNET, "linux-64"),  # pip entries (wheels and an sdist)
    (LARSNET, "linux-aarch64"),
    (BODO, "linux-64"),  # dev category, a custom channel
    (BODO, "osx-arm64"),
    (PANGEO, "osx-64"),  # 700+ packages
]


@pytest.mark.parametrize("kind", ["explicit", "env"])
@pytest.mark.parametrize(("lock", "platform"), CASES, ids=lambda v: getattr(v, "parent", v))
def test_render_equals_conda_lock_render_line_for_line(
    lock: Path, platform: str, kind: Kind
) -> None:
    ours = render_text(read_lock(lock), platform, kind).splitlines()
    theirs = conda_lock_render(lock, platform, kind).splitlines()
    assert len(ours) == len(theirs) > 10
    for number, (a, b) in enumerate(zip(ours, theirs, strict=True), start=1):
        assert a == b, f"line {number}"


def test_without_dev_dependencies_equals_conda_lock() -> None:
    lock = read_lock(BODO)
    ours = render_text(lock, "linux-64", "explicit", render_categories(dev=False))
    assert ours == conda_lock_render(BODO, "linux-64", "explicit", dev=False)
    assert len(ours.splitlines()) < len(render_text(lock, "linux-64", "explicit").splitlines())


def test_cli_writes_one_file_per_platform_and_refuses_an_unlocked_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "environment.yml").write_text("dependencies: [python]\n", encoding="utf-8")
    write_flavor(tmp_path / "images", "cpu")
    shutil.copy(LARSNET, tmp_path / "conda-lock.yml")
    with pytest.raises(SystemExit) as done:
        cli.main(["-C", str(tmp_path), "render", "cpu", "--kind", "explicit"])
    assert done.value.code == 0
    for platform in ("linux-64", "linux-aarch64"):
        written = tmp_path / default_filename(platform, "explicit")
        assert written.read_text(encoding="utf-8") == conda_lock_render(
            LARSNET, platform, "explicit"
        )
        # the rendered explicit file reads back as a lock of that platform
        assert read_lock(written).platforms == (platform,)
    out = tmp_path / "env.yml"
    with pytest.raises(SystemExit) as done:
        cli.main(["-C", str(tmp_path), "render", "cpu", "--kind", "env", "--platform",
                  "linux-64", "-o", str(out)])  # fmt: skip
    assert done.value.code == 0
    assert out.read_text(encoding="utf-8") == conda_lock_render(LARSNET, "linux-64", "env")
    with pytest.raises(SystemExit) as done:
        cli.main(["-C", str(tmp_path), "render", "cpu", "--platform", "win-64"])
    assert done.value.code == 2
    assert "no platform 'win-64'" in capsys.readouterr().err
    assert not (tmp_path / default_filename("win-64", "explicit")).exists()
