"""Bad input to build and inspect: image names, base images, builders, and registry content
that is not a plain image. Each is a LockdockError with its own exit code, named, before any
work; no engine needed (a fake ``docker`` on PATH stands in for the edges)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lockdock import engine
from lockdock import inspect as ins
from lockdock.context import resolve_flavor
from lockdock.errors import EngineError, LockdockError, RegistryError, SpecError, UsageError
from lockdock.image import plan
from lockdock.image.stage import prepare_build
from lockdock.installer.store import relative_path
from lockdock.workspace import BuildRecord, Workspace
from tests.helpers import fake_docker, one_package_project

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64





# --- A: --name and --base-image -------------------------------------------------------------


@pytest.mark.parametrize(("name", "says"), [
    ("Hunt2/Bad", "not a valid repository name"),
    ("hunt2/x y", "not a valid repository name"),
    ("", "not a valid repository name"),
    ("hunt2/x:mytag", "has the tag :mytag"),
    ("hunt2/x@sha256:" + "a" * 64, "has the digest @sha256:"),
    (" hunt2/x", "surrounding spaces"),
])  # fmt: skip
def test_a_name_that_is_not_a_repository_is_a_usage_error(name: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        plan.check_image_name(name, "cpu")
    assert caught.value.exit_code == 2
    assert f"--name {name!r}" in str(caught.value) and says in str(caught.value)
    assert "lockdock/cpu" in str(caught.value)  # what is expected


@pytest.mark.parametrize("name", ["hunt2/x", "localhost:5000/a/b", "127.0.0.1:5000/x",
                                  "ghcr.io/org/lockdock"])
def test_a_repository_name_passes(name: str) -> None:
    assert plan.check_image_name(name, "cpu") == name


def test_a_base_image_that_is_not_a_reference_is_a_usage_error_the_default_a_spec_error(
) -> None:
    with pytest.raises(UsageError, match=r"^--base-image 'Not Valid' is not an image ref"):
        plan.check_base_image("Not Valid", "debian:12")
    with pytest.raises(UsageError, match="surrounding spaces"):
        plan.check_base_image("debian:12 ", None)
    with pytest.raises(SpecError, match="ARG BASE_IMAGE default 'Not Valid'"):
        plan.check_base_image(None, "Not Valid")
    with pytest.raises(UsageError, match="no default BASE_IMAGE"):
        plan.check_base_image(None, None)
    assert plan.check_base_image(None, "debian:12@sha256:" + "b" * 64).startswith("debian")
    assert plan.check_base_image("hunt2/base:bookworm", None) == "hunt2/base:bookworm"


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"name": "", "base_image": "b:1"}, "--name ''"),
    ({"name": "Hunt2/Bad", "base_image": "b:1"}, "--name 'Hunt2/Bad'"),
    ({"base_image": "Not Valid"}, "--base-image 'Not Valid'"),
])  # fmt: skip
def test_prepare_build_refuses_them_before_staging_anything(
    tmp_path: Path, kwargs: dict[str, Any], says: str
) -> None:
    """An empty --name no longer falls back to lockdock/<flavor>; a bad --base-image is no
    BuildKit failure (exit 10) after staging: exit 2, with nothing staged."""
    project = one_package_project(tmp_path / "proj")
    context = resolve_flavor(project, "cpu", "linux/amd64")
    workspace = Workspace(project)
    (artifact,) = context.artifacts
    stored = workspace.store / relative_path(artifact)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"hello")
    with pytest.raises(UsageError) as caught:
        prepare_build(context, **kwargs)
    assert says in str(caught.value) and caught.value.exit_code == 2
    assert not workspace.build_dir.exists()
    # plan_build, the pure half, refuses them as well
    with pytest.raises(UsageError, match=says.replace("'", ".")):
        plan.plan_build(context, store=workspace.store, present={relative_path(artifact)},
                        timestamps=[], git=(None, None), native=context.platform,
                        work=tmp_path / "work", **kwargs)  # fmt: skip


def test_local_image_id_refuses_a_bad_reference_before_asking_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_engine() -> None:
        raise AssertionError("the engine was asked")

    monkeypatch.setattr(engine, "docker_client", no_engine)
    for reference in ("Hunt2/Bad:cpu-1", "hunt2/x:mytag:cpu-1", "hunt2/x y:cpu-1"):
        with pytest.raises(UsageError, match="not a valid repository name"):
            engine.local_image_id(reference)


def test_local_image_id_turns_an_engine_refusal_into_a_lockdock_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import docker.errors

    class Images:
        def __init__(self, status: int) -> None:
            self.status = status

        def get(self, reference: str) -> Any:
            response = type("R", (), {"status_code": self.status, "reason": "x"})()
            raise docker.errors.APIError("refused", response, explanation="invalid reference")

    for status, kind, code in ((400, UsageError, 2), (500, EngineError, 9)):
        client = type("C", (), {"images": Images(status)})()
        monkeypatch.setattr(engine, "docker_client", lambda client=client: client)
        with pytest.raises(kind) as caught:
            engine.local_image_id("hunt2/x:1")
        assert "hunt2/x:1" in str(caught.value) and "invalid reference" in str(caught.value)
        assert caught.value.exit_code == code


# --- C: --builder ---------------------------------------------------------------------------


def test_a_builder_that_does_not_exist_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = ('if [ "$1 $2" = "buildx inspect" ]; then echo \'ERROR: no builder "nosuch" '
              "found' >&2; exit 1; fi\necho 26.1.5\n")
    monkeypatch.setenv("PATH", fake_docker(tmp_path, script))
    with pytest.raises(UsageError) as caught:
        engine.check_engine("nosuch")
    assert caught.value.exit_code == 2 and "--builder 'nosuch'" in str(caught.value)
    assert "docker buildx ls" in str(caught.value)
    # any other failure to inspect the builder stays the engine's
    other = engine.builder_problem("remote", "ERROR: failed to connect to buildkitd")
    assert isinstance(other, EngineError) and "remote" in str(other)


# --- B: registry content that is not a plain image (pure) -----------------------------------


def _manifest(layers: int = 1, **extra: Any) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": D1, "size": 10},
            "layers": [{"mediaType": "x", "digest": D2, "size": 93 + i}
                       for i in range(layers)], **extra}  # fmt: skip


def _config(diff_ids: Any) -> dict[str, Any]:
    return {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                                                              "diff_ids": diff_ids}}


@pytest.mark.parametrize(("manifest", "config", "says"), [
    (_manifest(artifactType="application/vnd.hunt2.thing",
               config={"mediaType": "application/vnd.hunt2.config+json", "digest": D1,
                       "size": 21}),
     {"architecture": "", "os": "", "rootfs": {"type": "", "diff_ids": None}},
     "artifact (application/vnd.hunt2.thing)"),
    (_manifest(config={"mediaType": "application/vnd.hunt2.config+json"}), _config([D1]),
     "artifact (application/vnd.hunt2.config+json)"),
    (_manifest(), _config(None), "no rootfs.diff_ids"),
    (_manifest(), {"architecture": "amd64"}, "no rootfs.diff_ids"),
    (_manifest(), None, "no rootfs.diff_ids"),
    (_manifest(), _config(["not a digest"]), "no rootfs.diff_ids"),
    (_manifest(), _config([D1, D2]), "lists 2 layer(s), its manifest 1"),
    (_manifest(layers=2), _config([D1]), "lists 1 layer(s), its manifest 2"),
    (_manifest(layers=0) | {"layers": [{"digest": D2}]}, _config([D1]), "descriptors with sizes"),
    (_manifest() | {"layers": None}, _config([D1]), "descriptors with sizes"),
    ([], _config([D1]), "not an image manifest"),
    ({"manifests": []}, _config([D1]), "not an image manifest"),
])  # fmt: skip
def test_registry_content_that_is_not_an_image_is_a_registry_error(
    manifest: Any, config: Any, says: str
) -> None:
    with pytest.raises(RegistryError) as caught:
        ins.registry_image("127.0.0.1:5000/hunt2/craft:x", manifest, config)
    text = str(caught.value)
    assert caught.value.exit_code == 13 and says in text, text
    assert text.startswith("127.0.0.1:5000/hunt2/craft:x is not an image whose layers can be "
                           "compared")


def test_a_plain_image_gives_its_diff_ids_and_compressed_sizes() -> None:
    layers = ins.registry_image("r/x:1", _manifest(layers=2), _config([D1, D2]))
    assert layers.diff_ids == (D1, D2) and layers.compressed == {D1: 93, D2: 94}


def test_an_index_gives_the_platforms_manifest_or_a_registry_error() -> None:
    amd = {"mediaType": OCI_MANIFEST, "digest": D1, "platform": {"os": "linux",
                                                                 "architecture": "amd64"}}
    arm = {"mediaType": OCI_MANIFEST, "digest": D2, "platform": {"os": "linux",
                                                                 "architecture": "arm64"}}
    attestation = {"digest": "sha256:" + "3" * 64,
                   "platform": {"os": "unknown", "architecture": "unknown"}}
    index = {"mediaType": "application/vnd.oci.image.index.v1+json"}
    assert ins.platform_manifest("r:1", index | {"manifests": [attestation, arm, amd]},
                             "linux/amd64") == D1
    assert ins.platform_manifest("r:1", index | {"manifests": [arm, amd]}, "linux/arm64") == D2
    for manifests, says in (([], "no linux/amd64 image (it lists none)"),
                            ([arm], "no linux/amd64 image (it lists linux/arm64)"),
                            ([amd | {"digest": None}], "it lists linux/amd64"),
                            (None, "no list of manifests"), ("x", "no list of manifests")):
        with pytest.raises(RegistryError, match=says.replace("(", r"\(").replace(")", r"\)")):
            ins.platform_manifest("r:1", index | {"manifests": manifests}, "linux/amd64")


def test_a_malformed_against_is_a_usage_error() -> None:
    for against in ("NOT A REF", "", "x:bad tag", " debian:12"):
        with pytest.raises(UsageError, match=f"^--against {against!r} is not an image ref"):
            ins.check_against(against)
    assert ins.check_against("127.0.0.1:5000/hunt2/tiny:1") == "127.0.0.1:5000/hunt2/tiny:1"


# --- C: the edges, with a fake docker -------------------------------------------------------

#: A docker whose engine has no such image and whose registry answers per reference.
_REGISTRY = """\
case "$1 $2" in
  "version "*) echo 26.1.5; exit 0;;
  "buildx version") echo v0.14; exit 0;;
  "image inspect") echo "Error response from daemon: No such image: $5" >&2; exit 1;;
esac
ref="$4"; shift 4
case "$ref $*" in
  *nosuch*) echo "ERROR: $ref: not found" >&2; exit 1;;
  *5999*) echo "ERROR: dial tcp 127.0.0.1:5999: connect: connection refused" >&2; exit 1;;
  "r/index:1 --raw") cat "$(dirname "$0")/index.json";;
  "r/halfindex:1 --raw") cat "$(dirname "$0")/index.json";;
  r/halfindex@*) echo "ERROR: manifest unknown" >&2; exit 1;;
  *"--raw") cat "$(dirname "$0")/manifest.json";;
  *) cat "$(dirname "$0")/config.json";;
esac
"""


def _registry_docker(tmp_path: Path) -> str:
    path = fake_docker(tmp_path, _REGISTRY)
    bin_dir = tmp_path / "bin"
    (bin_dir / "manifest.json").write_text(json.dumps(_manifest()))
    (bin_dir / "config.json").write_text(json.dumps(_config([D1, D2])))
    (bin_dir / "index.json").write_text(json.dumps({"manifests": [
        {"digest": D1, "platform": {"os": "linux", "architecture": "amd64"}}]}))
    return path


@pytest.mark.parametrize("reference", [
    "127.0.0.1:5999/hunt2/x:1",  # not listening
    "127.0.0.1:5000/hunt2/nosuch:1",  # no such repository / tag
    "r/halfindex:1",  # an index whose platform manifest cannot be read
    "r/index:1",  # config (2 diff IDs) and manifest (1 layer) disagree
    "r/plain:1",
])  # fmt: skip
def test_an_against_the_registry_cannot_give_is_exit_13_not_9(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference: str
) -> None:
    monkeypatch.setenv("PATH", _registry_docker(tmp_path))
    with pytest.raises(LockdockError) as caught:
        ins.image_layers(reference)
    assert isinstance(caught.value, RegistryError) and caught.value.exit_code == 13
    assert reference in str(caught.value)


def test_the_recorded_image_gone_from_the_engine_says_to_rebuild(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not a Docker Hub lookup of the local tag (exit 9, DNS error): exit 2, rebuild."""
    project = one_package_project(tmp_path / "proj")
    Workspace(project).write_build_record(BuildRecord(
        flavor="cpu", platform="linux/amd64", reference="hunt2/gone:cpu-1", digest=D1,
        tags=("hunt2/gone:cpu-1",), lock="conda-lock.yml", lock_sha256="0" * 64,
        source_date_epoch=1))  # fmt: skip
    monkeypatch.setenv("PATH", _registry_docker(tmp_path))
    with pytest.raises(UsageError) as caught:
        ins.inspect_command(project, "cpu", platform="linux/amd64")
    text = str(caught.value)
    assert "hunt2/gone:cpu-1" in text and "no longer in the engine" in text
    assert "`lockdock build cpu`" in text
    with pytest.raises(UsageError, match=r"^--against 'NOT A REF'"):
        ins.inspect_command(project, "cpu", platform="linux/amd64", against="NOT A REF")
