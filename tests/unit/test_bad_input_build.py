"""Bad input to ``build``, ``test`` and ``devcontainer``, with the engine faked: each mistake
is named before any work, and a failure leaves no tag, container or file behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lockdock import gates
from lockdock.accelerators import KINDS
from lockdock.context import FlavorContext, resolve_flavor
from lockdock.errors import EngineError, LocalFileError, UsageError
from lockdock.fsutil import local_file_error
from lockdock.gates.results import ImageUnderTest
from lockdock.image import build as image_build
from lockdock.image import plan
from lockdock.installer.store import relative_path
from lockdock.platform import Platform
from lockdock.workspace import IMAGES_LOCK, BuildRecord, Workspace
from tests.helpers import one_package_project, run_cli

OLD = "sha256:" + "1" * 64
NEW = "sha256:" + "2" * 64





class FakeEngine:
    """The engine's tags (reference -> image id) and the calls build makes into it."""

    def __init__(self, tags: dict[str, str] | None = None) -> None:
        self.tags = dict(tags or {})
        self.looked_up: list[str] = []
        self.staged: list[str] = []  # flavors prepare_build staged

    def local_image_id(self, reference: str) -> str | None:
        self.looked_up.append(reference)
        return self.tags.get(reference)

    def tag(self, image: str, references: Any) -> None:
        image_id = self.tags.get(image, image)
        self.tags.update(dict.fromkeys(references, image_id))

    def untag(self, reference: str) -> None:
        self.tags.pop(reference, None)

    def run_buildx(self, argv: list[str], what: str, load: bool = False) -> None:
        name = next(a for a in argv if a.startswith("type=")).split("name=")[1].split(",")[0]
        self.tags[name] = NEW


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FlavorContext, FakeEngine]:
    """A resolved flavor whose build runs up to the engine, which is faked; planning is the
    real ``plan_build`` (staging is not: it downloads the installer's wheels)."""
    context = resolve_flavor(one_package_project(tmp_path / "proj"), "cpu", "linux/amd64")
    engine = FakeEngine()

    def prepare(context: FlavorContext, store: Path | None, **kwargs: Any) -> plan.BuildPlan:
        engine.staged.append(context.flavor.name)
        present = {relative_path(a) for a in context.artifacts}
        return plan.plan_build(context, store=tmp_path / "store", present=present,
                               timestamps=[], git=(None, None), native=context.platform,
                               work=tmp_path / "work", base_default="b:1", **kwargs)

    monkeypatch.setattr(image_build, "native_platform", lambda: Platform.image("linux/amd64"))
    for name in ("local_image_id", "tag", "untag", "run_buildx"):
        monkeypatch.setattr(image_build, name, getattr(engine, name))
    monkeypatch.setattr(image_build, "image_id", lambda reference: engine.tags[reference])
    monkeypatch.setattr(image_build, "prepare_build", prepare)
    return context, engine


def _references(context: FlavorContext, name: str = "lockdock/cpu") -> tuple[str, ...]:
    return plan.planned_tags(context, context.platform).named(name)


# --- finding 9: the build record ---------------------------------------------------------


def test_an_unwritable_build_record_is_exit_16_before_any_work(
    built: tuple[FlavorContext, FakeEngine],
) -> None:
    context, engine = built
    folder = context.workspace.builds_dir / "cpu"
    folder.parent.mkdir(parents=True)
    folder.write_text("")  # a file where the record's folder should be
    with pytest.raises(LocalFileError) as caught:
        image_build.build(context)
    assert caught.value.exit_code == 16
    assert str(caught.value).startswith(f"Could not write {folder / 'amd64.json'} (at {folder})")
    assert engine.staged == [] and engine.tags == {}
    folder.unlink()
    (folder / "amd64.json").mkdir(parents=True)  # a directory in the record's place
    with pytest.raises(LocalFileError, match="a directory is in its place"):
        image_build.build(context)
    assert engine.tags == {}


def test_a_record_that_cannot_be_written_after_tagging_takes_the_tags_back(
    built: tuple[FlavorContext, FakeEngine], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a failure after the probe (a full disk) gets this far: the new tags go, the ones
    that named an earlier image name it again, and the temporary tag goes too."""
    context, engine = built
    references = _references(context)
    engine.tags = {references[-1]: OLD}  # the moving tag names the last build

    def full(self: Workspace, record: BuildRecord) -> Path:
        path = self.build_record_path(record.flavor, record.platform)
        raise local_file_error(path, OSError(28, "No space left on device"), "write")

    monkeypatch.setattr(Workspace, "write_build_record", full)
    with pytest.raises(LocalFileError) as caught:
        image_build.build(context, force=True)
    assert caught.value.exit_code == 16
    assert "no space left on the device" in str(caught.value)
    assert "was undone: its tags were removed" in str(caught.value)
    assert engine.tags == {references[-1]: OLD}


def test_a_build_found_unchanged_without_its_record_says_to_force(
    built: tuple[FlavorContext, FakeEngine], capsys: pytest.CaptureFixture[str],
) -> None:
    context, engine = built
    references = _references(context)
    engine.tags = dict.fromkeys(references, OLD)
    result = image_build.build(context)
    err = capsys.readouterr().err
    record = context.workspace.build_record_path("cpu", "linux/amd64")
    assert not result.built and result.digest == OLD
    assert f"the build record {record} is missing" in err
    assert "Pass --force to rebuild it and record the build." in err
    assert engine.staged == []
    result = image_build.build(context, force=True)  # the rebuild records it
    assert result.built and result.record == record
    stored = context.workspace.read_build_record("cpu", "linux/amd64")
    assert stored is not None and stored.reference == references[0]
    capsys.readouterr()
    image_build.build(context)
    err = capsys.readouterr().err
    assert "nothing to build (--force rebuilds)." in err and "--force to rebuild" not in err


# --- build --name / --base-image, before the engine --------------------------------------


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("name", "Hunt2/Bad", "--name 'Hunt2/Bad' is not an image name"),
    ("name", "", "--name '' is not an image name"),
    ("name", "hunt6/x:1", "--name 'hunt6/x:1' has the tag :1"),
    ("base_image", "not a ref", "--base-image 'not a ref' is not an image reference"),
])
def test_a_bad_name_or_base_is_named_as_the_option_even_when_the_image_exists(
    built: tuple[FlavorContext, FakeEngine], option: str, value: str, expected: str,
) -> None:
    context, engine = built
    engine.tags = dict.fromkeys(_references(context), OLD)  # lockdock/cpu: a no-op otherwise
    options: dict[str, Any] = {option: value}
    with pytest.raises(UsageError) as caught:
        image_build.build(context, **options)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(expected), str(caught.value)
    assert engine.looked_up == []  # refused before the engine was asked


# --- finding 10: lockdock test -----------------------------------------------------------


IMAGE = ImageUnderTest(reference="hunt6/tiny:1", digest="sha256:" + "3" * 64, flavor="cpu",
                       platform="linux/amd64", labels={})


class UnstartableContainers:
    """``containers.run`` as the SDK does it: create (named), then start, which fails."""

    def __init__(self, explanation: str) -> None:
        self.explanation = explanation
        self.created: dict[str, Any] = {}
        self.removed: list[str] = []

    def run(self, image: str, **kwargs: Any) -> Any:
        import docker.errors

        self.created[kwargs["name"]] = kwargs
        raise docker.errors.APIError("500 Server Error", explanation=self.explanation)

    def get(self, name: str) -> Any:
        import docker.errors

        if name not in self.created:
            raise docker.errors.NotFound(f"No such container: {name}")
        containers = self

        class Created:
            def remove(self, force: bool) -> None:
                containers.removed.append(name)
                del containers.created[name]

        return Created()


class UnstartableClient:
    def __init__(self, explanation: str) -> None:
        self.containers = UnstartableContainers(explanation)


@pytest.mark.parametrize(("explanation", "error", "starts", "says"), [
    ("unable to find user lockdock: no matching entries in passwd file", UsageError,
     "Image hunt6/tiny:1 (sha256:333333333333", "is not a lockdock image: it has no user "
     "lockdock"),
    ('failed to create task: exec: "/opt/conda/envs/lockdock/bin/python": stat '
     "/opt/conda/envs/lockdock/bin/python: no such file or directory", UsageError,
     "Image hunt6/tiny:1", "is not a lockdock image: it has no /opt/conda/envs/lockdock/bin"),
    ("could not select device driver", EngineError, "The Docker engine could not run the "
     "gates in hunt6/tiny:1", "Does the engine give containers cuda devices?"),
])
def test_a_container_that_cannot_start_is_removed_and_a_foreign_image_is_exit_2(
    tmp_path: Path, explanation: str, error: type[Exception], starts: str, says: str,
) -> None:
    client = UnstartableClient(explanation)
    with pytest.raises(error) as caught:
        gates.run_in_image(client, IMAGE, tmp_path, tmp_path, {}, accelerator=KINDS["cuda"],
                           devices=True)
    assert str(caught.value).startswith(starts), str(caught.value)
    assert says in str(caught.value) and explanation in str(caught.value)
    assert client.containers.created == {} and len(client.containers.removed) == 1


def test_a_foreign_image_names_the_option_fix(tmp_path: Path) -> None:
    client = UnstartableClient("unable to find user lockdock: no matching entries")
    with pytest.raises(UsageError) as caught:
        gates.run_in_image(client, IMAGE, tmp_path, tmp_path, {}, accelerator=KINDS["cpu"],
                           devices=False)
    assert caught.value.exit_code == 2
    assert "`lockdock build cpu` made, or pass --image with one" in str(caught.value)


# --- devcontainer -o ---------------------------------------------------------------------


def _published(root: Path) -> Path:
    one_package_project(root)
    Workspace(root).images_lock_path.write_text(json.dumps({"version": 1, "images": [{
        "flavor": "cpu", "repository": "127.0.0.1:5000/x", "digest": "sha256:" + "a" * 64,
        "reference": "127.0.0.1:5000/x:cpu-abc@sha256:" + "a" * 64}]}))
    return root


@pytest.mark.parametrize(("output", "expected"), [
    ("", "Option --output '.' is empty or a directory"),
    ("conda-lock.yml", "Option --output conda-lock.yml is conda-lock.yml, an input of project"),
    (IMAGES_LOCK, f"Option --output {IMAGES_LOCK} is {IMAGES_LOCK}, an input"),
])
def test_devcontainer_output_is_checked_before_anything_is_read_or_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    output: str, expected: str,
) -> None:
    root = _published(tmp_path / "proj")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    monkeypatch.chdir(root)
    assert run_cli("devcontainer", "cpu", "-o", output, "--force", project=root) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert run_cli("devcontainer", "cpu", "-o", tmp_path / "dc.json", project=root) == 0
    assert json.loads((tmp_path / "dc.json").read_text())["image"].startswith("127.0.0.1:5000/")

