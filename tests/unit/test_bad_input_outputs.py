"""Bad inputs, continued: JSON nested too deeply, malformed ``--image`` references, ``-o``
naming a directory or a project input, ``render --extras`` naming no category.

Same contract as ``test_bad_input``: the documented exit code, no traceback, the culprit
named, every file under the test's folder byte-identical afterwards. None needs the Docker
engine: the references are refused before it is asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lockdock.errors import LockdockError, PinError, PublishRefusedError, SpecError, UsageError
from lockdock.registry import local_image_option, parse_reference
from lockdock.render import check_output
from lockdock.spec import load_project
from lockdock.textio import load_json
from lockdock.workspace import read_gate_record
from tests.unit.test_bad_input import (
    Case,
    Project,
    _argv,
    assert_clean_failure,
    dockerfile,
    images_lock,
    proj,
    run_cli,
    snapshot,
)

__all__ = ["proj"]  # the fixture, imported to be used here

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_DEVCONTAINER = '{"image": "127.0.0.1:9/x:1", "a": ' + "[" * 2000 + "]" * 2000 + "}"
PUBLISH = ("publish", "cpu", "--registry", "127.0.0.1:9/x")


def symlink_to_lock(p: Project) -> None:
    (p.root / "link.yml").symlink_to(p.lock)


CASES = [
    # finding 9: deeply nested JSON is the reader's error class, not a RecursionError
    Case("images-lock-deep-devcontainer", ("devcontainer", "cpu"), 3,
         "images.lock.json cannot be read as JSON: its arrays/objects are nested more than",
         images_lock(DEEP)),
    Case("images-lock-huge-number", ("devcontainer", "cpu"), 3,
         "images.lock.json cannot be read as JSON: Exceeds the limit",
         images_lock(b'{"version": ' + b"1" * 5000 + b', "images": []}')),
    Case("devcontainer-deep-pin", ("pin", "127.0.0.1:9/x", "--file",
                                   "{root}/project/.devcontainer.json"), 15,
         ".devcontainer.json cannot be read as JSON (with comments)",
         dockerfile(DEEP_DEVCONTAINER, ".devcontainer.json")),
    # finding 10: --image is checked before the engine is asked
    Case("test-image-bad-ref", ("test", "cpu", "--image", "BAD REF"), 2,
         "Option --image: Image reference 'BAD REF' is not a valid repository name"),
    Case("test-image-empty", ("test", "cpu", "--image", ""), 2, "Option --image is empty"),
    Case("test-image-bad-registry", ("test", "cpu", "--image", "BAD HOST.io/x:1"), 2,
         "invalid registry 'BAD HOST.io'"),
    Case("test-image-unicode-tag", ("test", "cpu", "--image", "x:tägé"), 2,
         "invalid tag 'tägé'"),
    Case("publish-image-bad-ref", (*PUBLISH, "--image", "BAD REF"), 2,
         "Option --image: Image reference 'BAD REF'"),
    Case("publish-image-empty", (*PUBLISH, "--image", ""), 2, "Option --image is empty"),
    # finding 13: -o is a file to write, never a project input; --extras names categories
    Case("render-output-empty", ("render", "cpu", "-o", ""), 2,
         "Option --output '.' is empty or a directory"),
    Case("sbom-output-empty", ("sbom", "cpu", "--platform", "linux-64", "-o", ""), 2,
         "Option --output '.' is empty or a directory"),
    Case("render-output-is-lock", ("render", "cpu", "-o", "{lock}"), 2,
         "is conda-lock.yml, an input of project"),
    Case("sbom-output-is-lock", ("sbom", "cpu", "--platform", "linux-64", "-o", "{lock}"), 2,
         "is conda-lock.yml, an input of project"),
    Case("render-output-lock-through-link", ("render", "cpu", "-o", "{root}/link.yml"), 2,
         "would overwrite it", symlink_to_lock),
    Case("render-output-lock-other-spelling", ("render", "cpu", "-o",
                                               "{root}/project/images/../conda-lock.yml"), 2,
         "an input of project"),
    Case("render-output-environment", ("render", "cpu", "-o",
                                       "{root}/project/environment.yml"), 2,
         "is environment.yml, an input of project"),
    Case("render-output-flavor-file", ("render", "cpu", "-o",
                                       "{root}/project/images/cpu/flavor.toml"), 2,
         "images/cpu/flavor.toml, an input"),
    Case("render-unknown-extra", ("render", "cpu", "--extras", "nosuch", "-o",
                                  "{root}/x.lock"), 2, "has no category nosuch"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, proj: Project, capsys: pytest.CaptureFixture[str]) -> None:
    case.setup(proj)
    before = snapshot(proj.root)
    code, output = run_cli(_argv(case, proj), capsys)
    assert_clean_failure(code, output, case.code, case.culprit.format(root=proj.root))
    assert snapshot(proj.root) == before


def test_render_and_sbom_still_write_a_new_file(proj: Project,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["render", "cpu", "-o", str(proj.root / "out.lock")],
                 ["sbom", "cpu", "--platform", "linux-64", "-o", str(proj.root / "b.json")]):
        code, output = run_cli(["-C", str(proj.project), *argv], capsys)
        assert code == 0, output
    assert "@EXPLICIT" in (proj.root / "out.lock").read_text(encoding="utf-8")
    assert '"components"' in (proj.root / "b.json").read_text(encoding="utf-8")


# --- the pure checks ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "message"), [
    ("[" * 100_000 + "]" * 100_000, SpecError, "nested more than about"),
    ('{"a": ' + "1" * 5000 + "}", PinError, "Exceeds the limit (4300 digits)"),
    ("{", PublishRefusedError, "is not valid JSON (line 1, column 2)"),
])
def test_load_json_raises_the_callers_class_naming_the_file(
    text: str, kind: type[LockdockError], message: str
) -> None:
    with pytest.raises(kind, match=r"f\.json .*Do this\.$") as raised:
        load_json(text, "f.json", kind, fix="Do this.")
    assert message in str(raised.value)
    assert "set_int_max_str_digits" not in str(raised.value)


def test_load_json_reads_json() -> None:
    assert load_json('{"a": [1]}', "f.json") == {"a": [1]}


def test_a_deep_gate_report_refuses_publication(tmp_path: Path) -> None:
    path = tmp_path / "gate.json"
    path.write_bytes(DEEP)
    with pytest.raises(PublishRefusedError, match=r"gate\.json cannot be read as JSON"):
        read_gate_record(path)


@pytest.mark.parametrize(("text", "message"), [
    ("", "Option --image is empty"),
    ("   ", "Option --image is empty"),
    ("BAD REF", "not a valid repository name"),
    ("UPPER/case:1", "not a valid repository name"),
    ("a b.io/x", "invalid registry 'a b.io'"),
    ("x:tägé", "invalid tag"),
    ("x\n/y", "not a valid repository name"),
    ("x@sha256:" + "a" * 64 + "zz", "invalid digest"),
    (" lockdock/cpu:latest", "has surrounding spaces"),
])
def test_local_image_option_refuses_what_is_no_reference(text: str, message: str) -> None:
    with pytest.raises(UsageError, match="Option --image") as raised:
        local_image_option(text)
    assert message in str(raised.value)


@pytest.mark.parametrize("text", [
    "lockdock/cpu:latest", "sha256:" + "a" * 64, "3f2a1b0c9d8e",
    "127.0.0.1:5000/team/ml:cpu", "[::1]:5000/x", "my-registry.example.com:443/a/b:c",
])
def test_local_image_option_keeps_references_and_image_ids(text: str) -> None:
    assert local_image_option(text) == text
    assert parse_reference(text)


class _Images:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def get(self, reference: str) -> Any:
        raise self.error


class _Client:
    def __init__(self, error: Exception) -> None:
        self.images = _Images(error)


@pytest.mark.parametrize("status", [400, 404])
def test_an_engine_refusing_the_reference_is_a_usage_error(status: int) -> None:
    import docker.errors
    import requests

    from lockdock.gates.run import inspect_image
    from lockdock.publish import DockerPusher

    response = requests.Response()
    response.status_code = status
    error = docker.errors.APIError("refused", response, explanation="invalid reference format")
    client = _Client(error)
    with pytest.raises(UsageError, match="refuses the image reference 'x'"):
        inspect_image(client, "x", "cpu")
    with pytest.raises(UsageError, match="refuses the image reference 'x'"):
        DockerPusher(client).inspect("x")


def test_check_output_allows_new_files_and_refuses_inputs(proj: Project) -> None:
    project = load_project(proj.project)
    check_output(proj.root / "new.lock", project)
    check_output(proj.project / "conda-linux-64.lock", project)
    with pytest.raises(UsageError, match="empty or a directory"):
        check_output(proj.project, project)
    with pytest.raises(UsageError, match="images/cpu/Dockerfile, an input"):
        check_output(proj.project / "images" / "cpu" / "Dockerfile", project, "-o")
