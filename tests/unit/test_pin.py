"""pin: finding references and planning rewrites (pure; the registry is a lookup table here).

The real registry round trip (resolve, rewrite, `docker pull` the pinned reference) is in
tests/engine/test_publish_engine.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lockdock import cli, pin
from lockdock.errors import PinError, RegistryError, UsageError
from lockdock.pin_files import default_files
from lockdock.registry import ImageRef, UnknownTagError, parse_reference
from lockdock.testing.flavors import write_flavor
from lockdock.workspace import IMAGES_LOCK, STATE_DIR, render_images_lock, updated_images_lock

REPO = "127.0.0.1:5000/team/ml"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
DEBIAN = "sha256:" + "d" * 64


class Registry:
    """A lookup table standing in for the registry: (repository, tag) -> digest."""

    def __init__(self, tags: dict[tuple[str, str], str]) -> None:
        self.tags = tags
        self.asked: list[str] = []

    def __call__(self, ref: ImageRef) -> str:
        self.asked.append(str(ref))
        try:
            return self.tags[(f"{ref.registry}/{ref.repository}", ref.tag or "latest")]
        except KeyError:
            raise UnknownTagError(f"Tag {ref.tag!r} of {ref.name} does not exist.") from None


@pytest.fixture
def registry() -> Registry:
    return Registry({
        ("127.0.0.1:5000/team/ml", "cpu"): D1,
        ("127.0.0.1:5000/team/ml", "cuda"): D2,
        ("docker.io/library/debian", "12"): DEBIAN,
    })


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("debian", "docker.io", "library/debian", None, None),
        ("debian:12", "docker.io", "library/debian", "12", None),
        ("ghcr.io/org/img:cpu-abc", "ghcr.io", "org/img", "cpu-abc", None),
        ("localhost:5000/a/b", "localhost:5000", "a/b", None, None),
        (f"{REPO}:cpu@{D1}", "127.0.0.1:5000", "team/ml", "cpu", D1),
        (f"{REPO}@{D1}", "127.0.0.1:5000", "team/ml", None, D1),
    ],
)
def test_parse_reference(text: str, registry: str, repository: str, tag: str | None,
                         digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag,
                                                                   digest)
    assert str(ref) == text


@pytest.mark.parametrize("text", ["UPPER/case", "repo:bad tag", "repo@sha256:short", "a//b"])
def test_parse_reference_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="Image reference"):
        parse_reference(text)


DOCKERFILE = f"""# syntax=docker/dockerfile:1
ARG BASE={REPO}:cpu
FROM --platform=$BUILDPLATFORM {REPO}:cpu AS build
RUN echo hi
FROM ${{BASE}} AS other
FROM build AS again
COPY --from=build /a /b
COPY --from={REPO}:cuda /c /d
FROM debian:12
from {REPO}:cpu@{D2} as final
"""


def test_dockerfile_multi_stage_rewrite(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(DOCKERFILE, encoding="utf-8")
    notes: list[str] = []
    plan = pin.pin(REPO, [path], resolve=registry, report=notes.append)
    text = path.read_text(encoding="utf-8")
    assert text == DOCKERFILE.replace(
        f"=$BUILDPLATFORM {REPO}:cpu AS", f"=$BUILDPLATFORM {REPO}:cpu@{D1} AS"
    ).replace(f"--from={REPO}:cuda", f"--from={REPO}:cuda@{D2}").replace(
        f"{REPO}:cpu@{D2} as final", f"{REPO}:cpu@{D1} as final"
    )
    assert len(plan.unpinned) == 2 and len(plan.outdated) == 1
    # the ARG default is not a FROM; the ARG-expanded FROM is reported, left alone
    assert f"ARG BASE={REPO}:cpu\n" in text
    assert any("${BASE}" in n and "variables" in n for n in notes)
    # stage names (build) were not taken for images; debian is another repository
    assert registry.asked == [f"{REPO}:cpu", f"{REPO}:cuda"]
    # pinning again changes nothing and --check passes
    again = pin.pin(REPO, [path], resolve=registry, report=notes.append)
    assert not again.rewrites and len(again.already_pinned) == 3
    assert path.read_text(encoding="utf-8") == text
    pin.pin(REPO, [path], check=True, resolve=registry, report=notes.append)


def test_tagged_target_pins_only_that_tag(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(DOCKERFILE, encoding="utf-8")
    plan = pin.pin(f"{REPO}:cuda", [path], resolve=registry, report=lambda _: None)
    assert [r.reference.text for rs in plan.rewrites.values() for r in rs] == [f"{REPO}:cuda"]
    assert f"{REPO}:cpu AS build" in path.read_text(encoding="utf-8")


DEVCONTAINER = f"""// a devcontainer with comments, as VS Code writes them
{{
  "name": "team", /* "image": "not/this:one" */
  "build": {{"args": {{"image": "{REPO}:cpu"}}}},
  "image": "{REPO}:cpu", // the one to pin
  "features": {{}},
}}
"""


def test_devcontainer_keeps_comments_and_pins_only_the_top_level_image(
    tmp_path: Path, registry: Registry
) -> None:
    path = tmp_path / ".devcontainer" / "devcontainer.json"
    path.parent.mkdir()
    path.write_text(DEVCONTAINER, encoding="utf-8")
    pin.pin(REPO, [path], resolve=registry, report=lambda _: None)
    assert path.read_text(encoding="utf-8") == DEVCONTAINER.replace(
        f'"image": "{REPO}:cpu", //', f'"image": "{REPO}:cpu@{D1}", //'
    )


def test_malformed_devcontainer_names_the_position_and_stays_untouched(
    tmp_path: Path, registry: Registry
) -> None:
    path = tmp_path / "devcontainer.json"
    broken = '{\n  // comment\n  "image": "' + REPO + ':cpu",\n  "name": \n}\n'
    path.write_text(broken, encoding="utf-8")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {REPO}:cpu\n", encoding="utf-8")
    before = os.stat(path).st_mtime_ns
    with pytest.raises(PinError, match=r"line 5, column 1"):
        pin.pin(REPO, [dockerfile, path], resolve=registry, report=lambda _: None)
    assert path.read_text(encoding="utf-8") == broken and os.stat(path).st_mtime_ns == before
    # nothing is written when any file is bad, not even the good Dockerfile
    assert dockerfile.read_text(encoding="utf-8") == f"FROM {REPO}:cpu\n"


COMPOSE = f"""# compose with anchors and both quoting styles
x-gpu: &gpu
  image: '{REPO}:cuda'   # keep me
services:
  train:
    <<: *gpu
  notebook:
    image: "{REPO}:cpu"
  plain:
    image: {REPO}:cpu
  env:
    image: ${{IMAGE:-{REPO}:cpu}}
  db:
    image: debian:12
"""


def test_compose_keeps_quoting_and_comments(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(COMPOSE, encoding="utf-8")
    notes: list[str] = []
    pin.pin(REPO, [path], resolve=registry, report=notes.append)
    text = path.read_text(encoding="utf-8")
    assert text == COMPOSE.replace(f"'{REPO}:cuda'", f"'{REPO}:cuda@{D2}'").replace(
        f'"{REPO}:cpu"', f'"{REPO}:cpu@{D1}"'
    ).replace(f"image: {REPO}:cpu\n", f"image: {REPO}:cpu@{D1}\n")
    import yaml

    services = yaml.safe_load(text)["services"]
    assert services["train"]["image"] == f"{REPO}:cuda@{D2}"
    assert any("${IMAGE" in n for n in notes)


def test_malformed_compose_names_the_position(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "compose.yml"
    path.write_text("services:\n  a:\n    image: [unclosed\n", encoding="utf-8")
    with pytest.raises(PinError, match=r"compose.yml is not valid YAML at line \d+, column \d+"):
        pin.pin(REPO, [path], resolve=registry, report=lambda _: None)


def test_check_fails_on_unpinned_and_outdated(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(f"FROM {REPO}:cpu\nFROM {REPO}:cuda@{D1}\n", encoding="utf-8")
    with pytest.raises(PinError) as raised:
        pin.pin(REPO, [path], check=True, resolve=registry, report=lambda _: None)
    assert raised.value.exit_code == 15
    assert f"Dockerfile:1: {REPO}:cpu is not pinned" in str(raised.value)
    assert f"Dockerfile:2: {REPO}:cuda@{D1} is outdated (tag now at {D2})" in str(raised.value)
    assert path.read_text(encoding="utf-8") == f"FROM {REPO}:cpu\nFROM {REPO}:cuda@{D1}\n"


def test_no_matching_reference_says_so(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM debian:12\n", encoding="utf-8")
    other = tmp_path / "compose.yml"
    other.write_text(f"services: {{a: {{image: '{REPO}:cpu'}}}}\n", encoding="utf-8")
    lines: list[str] = []
    pin.pin(REPO, [path, other], resolve=registry, report=lines.append)
    assert f"{path}: no reference to {REPO}" in lines
    with pytest.raises(PinError, match=f"No reference to {REPO}:cpu in .*Dockerfile"):
        pin.pin(f"{REPO}:cpu", [path], resolve=registry, report=lines.append)


def test_unknown_tag_is_named_and_nothing_is_written(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(f"FROM {REPO}:cpu\nFROM {REPO}:nope\n", encoding="utf-8")
    with pytest.raises(RegistryError, match="'nope'"):
        pin.pin(REPO, [path], resolve=registry, report=lambda _: None)
    assert path.read_text(encoding="utf-8") == f"FROM {REPO}:cpu\nFROM {REPO}:nope\n"


def test_default_files(tmp_path: Path) -> None:
    for name in ["Dockerfile", "docker/Dockerfile.gpu", "app.Dockerfile",
                 ".devcontainer/devcontainer.json", "compose.yaml", "docker-compose.prod.yml",
                 ".venv/Dockerfile", f"{STATE_DIR}/x/Dockerfile", "README.md", "config.yml"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("", encoding="utf-8")
    found = [p.relative_to(tmp_path).as_posix() for p in default_files(tmp_path)]
    assert sorted(found) == sorted([".devcontainer/devcontainer.json", "Dockerfile",
                                    "app.Dockerfile", "compose.yaml", "docker-compose.prod.yml",
                                    "docker/Dockerfile.gpu"])


def _record(flavor: str, repository: str = REPO) -> dict[str, object]:
    return {
        "flavor": flavor, "repository": repository, "digest": D1,
        "reference": f"{repository}:{flavor}-0123456789ab@{D1}",
        "tags": [f"{flavor}-0123456789ab", flavor], "lock": "conda-lock.yml",
        "lock_hash": "0123456789ab" + "0" * 52, "date": "20250101", "platforms": {},
    }


def test_devcontainer_command_writes_a_pinned_config(tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text("dependencies: []\n")
    for flavor in ("cpu", "cuda"):  # the accelerator kind decides the device settings
        write_flavor(tmp_path / "images", flavor)
    data = updated_images_lock(updated_images_lock(None, _record("cpu")), _record("cuda"))
    (tmp_path / IMAGES_LOCK).write_text(render_images_lock(data), encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        cli.main(["-C", str(tmp_path), "devcontainer", "cuda"])
    assert done.value.code == 0
    config = json.loads((tmp_path / ".devcontainer" / "devcontainer.json").read_text())
    assert config["image"] == f"{REPO}:cuda-0123456789ab@{D1}"
    assert config["hostRequirements"] == {"gpu": "optional"}
    assert config["remoteUser"] == "lockdock"
    # an existing, different file is not overwritten without --force
    with pytest.raises(SystemExit) as done:
        cli.main(["-C", str(tmp_path), "devcontainer", "cpu"])
    assert done.value.code == 2
    with pytest.raises(SystemExit) as done:
        cli.main(["-C", str(tmp_path), "devcontainer", "cpu", "--force"])
    assert done.value.code == 0
    config = json.loads((tmp_path / ".devcontainer" / "devcontainer.json").read_text())
    assert config["image"] == f"{REPO}:cpu-0123456789ab@{D1}" and "hostRequirements" not in config


def test_devcontainer_for_an_unpublished_flavor(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A valid project whose flavor was never published (the project is read first: its
    own mistakes would be named before the missing publication)."""
    (tmp_path / "environment.yml").write_text("dependencies: []\n")
    write_flavor(tmp_path / "images", "cpu")
    with pytest.raises(SystemExit) as done:
        cli.main(["-C", str(tmp_path), "devcontainer", "cpu"])
    assert done.value.code == 2
    assert "no published image of flavor 'cpu'" in capsys.readouterr().err
    assert not (tmp_path / ".devcontainer").exists()
