"""pin on inputs that once slipped through: a reference to the target is never passed over.

Continued Dockerfile lines, heredoc bodies, malformed digests, YAML block scalars and
anchors, references built from variables. The registry is a lookup table (as in test_pin.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lockdock import pin
from lockdock.errors import PinError
from lockdock.registry import ImageRef

REPO = "127.0.0.1:5000/team/ml"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def resolve(ref: ImageRef) -> str:
    return {"1": D1, "2": D2}[ref.tag or "latest"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def check_error(path: Path, target: str = REPO) -> str:
    with pytest.raises(PinError) as raised:
        pin.pin(target, [path], check=True, resolve=resolve, report=lambda _: None)
    assert raised.value.exit_code == 15
    return str(raised.value)


def run(path: Path, target: str = REPO) -> list[str]:
    lines: list[str] = []
    pin.pin(target, [path], resolve=resolve, report=lines.append)
    return lines


def test_from_continued_on_the_next_line_is_pinned(tmp_path: Path) -> None:
    text = f"FROM \\\n  {REPO}:1 AS base\nFROM {REPO}:2@{D2}\n"
    path = write(tmp_path, "Dockerfile", text)
    assert f"Dockerfile:2: {REPO}:1 is not pinned (tag now at {D1})" in check_error(path)
    run(path)
    assert path.read_text(encoding="utf-8") == text.replace(f"{REPO}:1 ", f"{REPO}:1@{D1} ")
    pin.pin(REPO, [path], check=True, resolve=resolve, report=lambda _: None)


def test_continuation_skips_comment_lines_and_follows_the_escape_directive(
    tmp_path: Path,
) -> None:
    text = f"# escape=`\nFROM --platform=linux/amd64 `\n# a comment\n\n  {REPO}:1 AS base\n"
    path = write(tmp_path, "Dockerfile", text)
    run(path)
    assert path.read_text(encoding="utf-8") == text.replace(f"{REPO}:1", f"{REPO}:1@{D1}")


def test_reference_split_inside_by_a_continuation_fails_check_and_is_left(
    tmp_path: Path,
) -> None:
    text = f"FROM {REPO}:\\\n1\n"
    path = write(tmp_path, "Dockerfile", text)
    message = check_error(path)
    assert "Dockerfile:1: a reference to" in message and "continued across lines" in message
    with pytest.raises(PinError, match="that lockdock can pin"):  # nothing else to pin
        run(path)
    assert path.read_text(encoding="utf-8") == text


def test_heredoc_body_is_not_an_instruction(tmp_path: Path) -> None:
    text = (f"FROM {REPO}:1 AS build\nRUN <<EOT\nFROM {REPO}:2\nEOT\n"
            f"COPY <<-'A' <<B /dst\n\tFROM {REPO}:2\n\tA\nCOPY --from={REPO}:2 x\nB\n"
            f"COPY --from={REPO}:2 /a /b\n")
    path = write(tmp_path, "Dockerfile", text)
    plan = pin.pin(REPO, [path], resolve=resolve, report=lambda _: None)
    assert [r.reference.line for rs in plan.rewrites.values() for r in rs] == [1, 10]
    assert path.read_text(encoding="utf-8") == text.replace(
        f"{REPO}:1 AS", f"{REPO}:1@{D1} AS").replace(
        f"--from={REPO}:2 /a", f"--from={REPO}:2@{D2} /a")
    # a heredoc never closed is no heredoc: the lines after it are still read
    path = write(tmp_path, "Dockerfile", f"RUN echo <<EOT\nFROM {REPO}:1\n")
    assert f"Dockerfile:2: {REPO}:1 is not pinned" in check_error(path)


@pytest.mark.parametrize("digest", ["sha256:abc", "SHA256:" + "1" * 64])
def test_malformed_digest_is_not_a_pin(tmp_path: Path, digest: str) -> None:
    text = f"FROM {REPO}:1@{digest}\nFROM {REPO}:2@{D2}\n"
    path = write(tmp_path, "Dockerfile", text)
    assert (f"Dockerfile:1: {REPO}:1@{digest} has an invalid digest, not a pin "
            f"(tag now at {D1})") in check_error(path)
    run(path)
    assert path.read_text(encoding="utf-8") == f"FROM {REPO}:1@{D1}\nFROM {REPO}:2@{D2}\n"


def test_malformed_digest_of_another_repository_is_only_a_note(tmp_path: Path) -> None:
    path = write(tmp_path, "Dockerfile", f"FROM other/app:1@sha256:abc\nFROM {REPO}:1@{D1}\n")
    lines: list[str] = []
    pin.pin(REPO, [path], check=True, resolve=resolve, report=lines.append)
    assert any("other/app:1@sha256:abc" in line and "invalid digest" in line for line in lines)


def test_variable_tag_of_the_target_fails_check(tmp_path: Path) -> None:
    text = f"ARG TAG=1\nFROM {REPO}:${{TAG}}\nFROM {REPO}:1\n"
    path = write(tmp_path, "Dockerfile", text)
    assert (f"Dockerfile:2: a reference to {REPO} that lockdock cannot pin: "
            f"{REPO}:${{TAG}} is built from variables") in check_error(path)
    lines = run(path)  # the rest is pinned, the variable one warned about
    assert any(line.startswith(f"warning: {path}:2: a reference to {REPO}") for line in lines)
    assert path.read_text(encoding="utf-8") == text.replace(
        f"{REPO}:1\n", f"{REPO}:1@{D1}\n")


def test_compose_folded_block_scalar_is_pinned_in_place(tmp_path: Path) -> None:
    text = (f"services:\n  a:\n    image: {REPO}:2@{D2}\n  c:\n    image: >-  # folded\n"
            f"      {REPO}:1\n\n  d:\n    image: |\n      {REPO}:2\n")
    path = write(tmp_path, "compose.yml", text)
    message = check_error(path)
    assert f"compose.yml:6: {REPO}:1 is not pinned" in message
    assert f"compose.yml:10: {REPO}:2 is not pinned" in message
    run(path)
    assert path.read_text(encoding="utf-8") == text.replace(
        f"      {REPO}:1\n", f"      {REPO}:1@{D1}\n").replace(
        f"      {REPO}:2\n", f"      {REPO}:2@{D2}\n")


def test_compose_scalar_folded_across_lines_fails_check(tmp_path: Path) -> None:
    text = f"services:\n  c:\n    image: >-\n      {REPO}\n      :1\n"
    path = write(tmp_path, "compose.yml", text)
    message = check_error(path)
    assert f"compose.yml:3: a reference to {REPO} that lockdock cannot pin" in message
    assert "written across lines, folded or with escapes" in message


def test_compose_anchor_is_pinned_and_the_alias_follows(tmp_path: Path) -> None:
    text = (f"services:\n  a:\n    image: &img !!str {REPO}:1\n  b:\n    image: *img\n"
            f"  c:\n    image: &other\n      '{REPO}:2'\n")
    path = write(tmp_path, "compose.yml", text)
    lines = run(path)
    assert not any("escapes" in line for line in lines)
    assert path.read_text(encoding="utf-8") == text.replace(
        f"{REPO}:1", f"{REPO}:1@{D1}").replace(f"'{REPO}:2'", f"'{REPO}:2@{D2}'")
    import yaml

    services = yaml.safe_load(path.read_text(encoding="utf-8"))["services"]
    assert services["b"]["image"] == f"{REPO}:1@{D1}"


def test_devcontainer_image_with_escapes_fails_check(tmp_path: Path) -> None:
    path = write(tmp_path, "devcontainer.json", '{"image": "' + REPO + '\\u003a1"}\n')
    message = check_error(path)
    assert f"devcontainer.json:1: a reference to {REPO} that lockdock cannot pin" in message
