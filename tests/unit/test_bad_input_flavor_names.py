"""Flavor names and moving tags that cannot be pushed (bad-input finding 8): refused when the
project loads (exit 3 naming the folder or flavor.toml and the key), before any build or
push; valid layouts, and folders of images/ that are not flavors, as before."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from lockdock.errors import SpecError
from lockdock.platform import PLATFORMS, Platform
from lockdock.spec import load_project
from lockdock.tags import arch_tag, content_tag, local_tags, publish_tags
from lockdock.testing.flavors import write_flavor
from tests.unit.test_bad_input import Project, assert_clean_failure, run_cli, snapshot
from tests.unit.test_bad_input import proj as proj  # the fixture, re-exported

CPU = 'accelerator = "cpu"\ndefault = true\n'
SHA = "0123456789ab" + "f" * 52
LONGEST = 64  # lockdock.tags.MAX_FLAVOR_NAME (imported where the test is of that module)
#: The image name grammar a flavor name must follow (distribution/reference's path component).
COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def cpu_with(p: Project, moving: str) -> Path:
    path = p.project / "images" / "cpu" / "flavor.toml"
    path.write_text(f"{CPU}moving-tags = {moving}\n", encoding="utf-8")
    return path


def refused(p: Project, capsys: pytest.CaptureFixture[str], argv: list[str],
            culprits: tuple[str, ...]) -> str:
    before = snapshot(p.root)
    code, output = run_cli(["-C", str(p.project), *argv], capsys)
    for culprit in culprits:
        assert_clean_failure(code, output, 3, culprit)
    assert snapshot(p.root) == before
    return output


# --- A: moving-tags ---------------------------------------------------------------------

BAD_MOVING = [
    ('[""]', "empty"),  # dockerd pushes "" as `latest`
    ('["-bad"]', "is not a tag"),
    ('[".bad"]', "is not a tag"),
    ('["cpu", "a b"]', "is not a tag"),
    ('["a:b"]', "is not a tag"),
    ('["été"]', "is not a tag"),
    (f'["{"x" * 129}"]', "is not a tag"),
    ('["cpu-0123456789ab"]', "content-addressed"),  # would move an immutable tag
    ('["cpu-0123456789ab-arm64"]', "content-addressed"),
]


@pytest.mark.parametrize(("moving", "why"), BAD_MOVING, ids=[m for m, _ in BAD_MOVING])
def test_a_moving_tag_that_cannot_be_pushed_is_refused_when_the_project_loads(
    proj: Project, moving: str, why: str
) -> None:
    path = cpu_with(proj, moving)
    with pytest.raises(SpecError, match=why) as refusal:
        load_project(proj.project)
    assert refusal.value.exit_code == 3
    assert str(path) in str(refusal.value) and "`moving-tags`" in str(refusal.value)
    cpu_with(proj, '["cpu", "latest", "v1.2_rc-3", "cpu-0123456789ab-stable", "' + "x" * 128
             + '"]')
    assert len(load_project(proj.project).flavors["cpu"].moving_tags) == 5


@pytest.mark.parametrize("argv", [["publish", "cpu", "--registry", "127.0.0.1:5000/hunt4/mt"],
                                  ["flavors"], ["lock", "--check"]],
                         ids=["publish", "flavors", "lock-check"])
@pytest.mark.parametrize("moving", ['[""]', '["-bad"]'])
def test_publish_with_a_bad_moving_tag_pushes_nothing(
    proj: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    argv: list[str], moving: str,
) -> None:
    import lockdock.publish

    def no_push(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("publish reached the registry step with a bad moving tag")

    monkeypatch.setattr(lockdock.publish, "publish", no_push)
    path = cpu_with(proj, moving)
    refused(proj, capsys, argv, (str(path), "`moving-tags`"))


# --- B: flavor folder names -------------------------------------------------------------

BAD_NAMES = ["Big", "my flavor", "a:b", "line\nbreak", "-lead", "trail-", "a..b", "é",
             "x" * (LONGEST + 1)]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_a_flavor_folder_name_that_is_no_image_name_is_refused(
    proj: Project, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    write_flavor(proj.project / "images", name, 'accelerator = "cpu"\n')
    with pytest.raises(SpecError, match=r"a flavor's name .* lowercase") as refusal:
        load_project(proj.project)
    message = str(refusal.value)
    assert refusal.value.exit_code == 3 and "\n" not in message
    assert f"images/{name if name.isprintable() else repr(name)}" in message
    for argv in (["flavors"], ["lock", "--check"], ["fetch", "--check"]):
        refused(proj, capsys, argv, ("Flavor folder", "Rename the folder"))


def test_names_of_existing_layouts_stay_valid_and_non_flavors_are_ignored(
    proj: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["cpu", "cuda", "pangeo-notebook", "cpu_mkl", "a__b", "v1.2", "x--y", "9",
             "a" * LONGEST]
    for name in names[1:]:
        write_flavor(proj.project / "images", name, 'accelerator = "cpu"\n')
    (proj.project / "images" / "base").mkdir()  # images/base and .hidden are not flavors
    (proj.project / "images" / "base" / "Dockerfile").write_text("FROM scratch\n")
    (proj.project / "images" / ".Hidden Folder").mkdir()
    flavors = load_project(proj.project).flavors
    assert sorted(flavors) == sorted(names)
    assert flavors["pangeo-notebook"].moving_tags == ("pangeo-notebook",)  # the default
    write_flavor(proj.project / "images", "Bad Name", 'accelerator = "cpu"\n')
    refused(proj, capsys, ["flavors"], ("Bad Name",))


@pytest.mark.parametrize("name", ["a" * LONGEST, "a", "pangeo-notebook"])
def test_every_tag_made_from_a_valid_flavor_name_is_a_tag_that_keeps_its_hash(
    name: str
) -> None:
    from lockdock.tags import MAX_FLAVOR_NAME, TAG, flavor_name_problem, moving_tag_problem

    assert MAX_FLAVOR_NAME == LONGEST and moving_tag_problem(name) is None
    assert flavor_name_problem(name) is None and COMPONENT.fullmatch(name)
    native = Platform.parse("linux-64")
    made = [content_tag(name, SHA), *publish_tags(name, SHA, "py3.12-torch2.13-cu13.0",
                                                  "20260102", (name,)).in_order]
    for platform in PLATFORMS:
        made += [arch_tag(content_tag(name, SHA), platform),
                 *local_tags(name, SHA, "py3.12-torch2.13-cu13.0", platform, native).in_order]
    for tag in made:
        assert TAG.fullmatch(tag), tag
    assert all(t.startswith(f"{name}-{SHA[:12]}") for t in made[:1])
    assert arch_tag(content_tag(name, SHA), Platform.parse("linux-ppc64le")).endswith(
        f"-{SHA[:12]}-ppc64le")


def test_a_long_flavor_name_would_lose_its_content_hash_so_it_is_refused(
    proj: Project,
) -> None:
    name = "a" * 120  # content_tag truncates to 128: the lock hash would be cut off
    assert SHA[:12] not in content_tag(name, SHA)
    write_flavor(proj.project / "images", name, 'accelerator = "cpu"\n')
    with pytest.raises(SpecError, match="too long"):
        load_project(proj.project)
