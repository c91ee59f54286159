"""Finding image references in the files ``pin`` rewrites (pure: text in, references out).

What counts as a reference:

- Dockerfile: the image of every ``FROM`` (flags such as ``--platform=`` skipped, ``AS name``
  recorded so that later ``FROM name`` / ``COPY --from=name`` are stage names, not images)
  and ``COPY --from=<image>``, read as BuildKit reads instructions: lines continued with the
  escape character (``\\``, or the ``# escape=`` directive's) are joined, comment lines inside
  a continuation skipped, and ``RUN``/``COPY``/``ADD`` heredoc bodies (``<<EOT`` ... ``EOT``)
  are not instructions.
- devcontainer.json: the top-level ``image``. The file is JSON with comments and trailing
  commas (the devcontainer spec's JSONC); a malformed file is a PinError with its position.
- compose files: every ``image:`` key (under services, or in ``x-`` extension blocks),
  located through a YAML parse and rewritten in place with the original quoting (an anchor
  ``&name`` or tag before the value is kept; an alias ``*name`` is the anchored value).

A reference lockdock cannot rewrite in place (built from ``$VAR``s, continued inside the
reference, a folded YAML scalar, a malformed digest) still says what it names as far as
``parse_reference`` can tell (``suspect``), so that ``pin`` never silently passes over a
reference to its target.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lockdock.dockerfile_syntax import Word, instruction_words
from lockdock.errors import PinError, UsageError
from lockdock.registry import ImageRef, parse_reference
from lockdock.textio import compose_all_yaml, load_json
from lockdock.workspace import STATE_DIR

if TYPE_CHECKING:
    import yaml

DOCKERFILE = "dockerfile"
DEVCONTAINER = "devcontainer"
COMPOSE = "compose"
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_SKIP_DIRS = frozenset({".git", str(STATE_DIR), ".venv", ".nox", "node_modules", "__pycache__"})


@dataclass(frozen=True)
class Reference:
    """One image reference in one file: where it is, and what it says."""

    path: Path
    line: int  # 1-based
    start: int  # character offsets of the reference text in the file
    end: int
    text: str
    ref: ImageRef | None  # None: not a literal reference lockdock can parse (see problem)
    problem: str | None = None  # why it is not (or cannot be) pinned in place
    quote: str = ""  # compose: the YAML quoting of the scalar, kept when rewriting
    #: ``ref`` None: the repository (and tag, None when unknown) it names as far as can be told
    suspect: ImageRef | None = None
    in_place: bool = True  # the span [start, end) is exactly the reference: rewritable
    bad_digest: bool = False  # ``ref`` None only because of its digest (``suspect`` has the tag)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def note(self) -> str | None:
        return f"{self.where}: {self.problem}." if self.problem else None


def kind_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".json"):
        return DEVCONTAINER
    if name.endswith((".yml", ".yaml")):
        return COMPOSE
    return DOCKERFILE


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _salvage(text: str) -> tuple[ImageRef | None, bool]:
    """What a reference ``parse_reference`` refused names: (repository with its tag, or with
    tag None when the tag cannot be told; whether only the part after ``@`` is wrong)."""

    def parsed(candidate: str) -> ImageRef | None:
        try:
            return parse_reference(candidate)
        except UsageError:
            return None

    if "$" in text:  # a literal head before a variable tag or digest: REPO:$TAG, REPO:1@$D
        head = text[: text.index("$")]
        if head.endswith(":"):
            return parsed(head[:-1]), False
        return (parsed(head[:-1]), False) if head.endswith("@") else (None, False)
    head = text.split("@", 1)[0]
    whole = parsed(head)
    if whole is not None:
        return whole, "@" in text and whole.tag is not None
    colon = head.find(":", head.rfind("/") + 1)
    return (parsed(head[:colon]), False) if colon > 0 else (None, False)


def _literal(path: Path, line: int, start: int, text: str, quote: str = "") -> Reference:
    end = start + len(text)
    if "$" in text:
        problem = (f"{text} is built from variables ($...); lockdock pins literal references "
                   "only (pin the variable's value instead)")
        return Reference(path, line, start, end, text, None, problem, quote, _salvage(text)[0])
    try:
        ref = parse_reference(text)
    except UsageError as error:
        suspect, bad_digest = _salvage(text)
        problem = f"{error.message.rstrip('.')}; left alone"
        return Reference(path, line, start, end, text, None, problem, quote, suspect,
                         bad_digest=bad_digest)
    return Reference(path, line, start, end, text, ref, None, quote)


def _unrewritable(path: Path, line: int, start: int, end: int, value: str,
                  problem: str) -> Reference:
    """A reference whose characters in the file are not ``value`` as written (continued,
    folded, escaped): judged by ``value``, never rewritten."""
    literal = _literal(path, line, start, value)
    return Reference(path, line, start, end, value, literal.ref, problem,
                     suspect=literal.suspect, in_place=False)


# --- Dockerfiles ----------------------------------------------------------------------


def _word_reference(path: Path, text: str, word: Word) -> Reference:
    line = _line_of(text, word.offsets[0])
    if word.in_place:
        return _literal(path, line, word.offsets[0], word.text)
    problem = (f"{word.text!r} is continued across lines inside the reference; lockdock "
               "cannot rewrite it in place, left alone")
    return _unrewritable(path, line, word.offsets[0], word.offsets[-1] + 1, word.text, problem)


def dockerfile_references(path: Path, text: str) -> list[Reference]:
    """Images named by ``FROM`` and ``COPY --from=`` (stage names excluded)."""
    found: list[Reference] = []
    stages: set[str] = set()
    for words in instruction_words(text):
        at = 1 if words[0].text.upper() == "ONBUILD" and len(words) > 1 else 0
        instruction, args = words[at].text.upper(), words[at + 1 :]
        if instruction == "FROM":
            images = [w for w in args if not w.text.startswith("--")]
            if not images:
                continue
            image = images[0]
            if len(images) >= 3 and images[1].text.upper() == "AS":
                stages.add(images[2].text.lower())
            if image.text.lower() in stages or image.text == "scratch":
                continue
            found.append(_word_reference(path, text, image))
        elif instruction == "COPY":
            for word in args:
                if not word.text.startswith("--from=") or word.text == "--from=":
                    continue
                source = word.tail(len("--from="))
                if source.text.lower() in stages or source.text.isdigit():
                    continue
                found.append(_word_reference(path, text, source))
    return found


# --- devcontainer.json ----------------------------------------------------------------


def _blank_jsonc(text: str) -> str:
    """``text`` with comments and trailing commas replaced by spaces (offsets unchanged)."""
    out = list(text)
    i, n = 0, len(text)
    in_string = False
    last_comma: int | None = None
    while i < n:
        c = text[i]
        if in_string:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_string = False
            i += 1
            continue
        if c == '"':
            in_string = True
            last_comma = None
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end == -1 else end
            for j in range(i, end):
                out[j] = " "
            i = end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end == -1 else end + 2
            for j in range(i, end):
                if out[j] != "\n":
                    out[j] = " "
            i = end
            continue
        elif c == ",":
            last_comma = i
        elif c in "}]":
            if last_comma is not None:
                out[last_comma] = " "
            last_comma = None
        elif not c.isspace():
            last_comma = None
        i += 1
    return "".join(out)


def _top_level_string_value(blank: str, key: str) -> tuple[int, int] | None:
    """Span (quotes included) of the string value of ``key`` in the top-level object.

    ``blank`` is valid JSON (comments blanked); like ``json.loads``, the last duplicate wins.
    """
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        while i < len(blank) and blank[i].isspace():
            i += 1
        return i

    span: tuple[int, int] | None = None
    i = skip(0) + 1  # past "{"
    while True:
        i = skip(i)
        if blank[i] == "}":
            return span
        name, i = _scanstring(blank, i + 1)
        i = skip(skip(i) + 1)  # past ":"
        _value, end = decoder.raw_decode(blank, i)
        if name == key and blank[i] == '"':
            span = (i, end)
        i = skip(end)
        if blank[i] == ",":
            i += 1


def devcontainer_references(path: Path, text: str) -> list[Reference]:
    """The top-level ``image`` of a devcontainer.json (JSON with comments)."""
    blank = _blank_jsonc(text)
    data = load_json(blank, path, PinError, what="JSON (with comments)",
                     fix="The file was left untouched.")
    if not isinstance(data, dict) or not isinstance(data.get("image"), str):
        return []
    span = _top_level_string_value(blank, "image")
    if span is None:  # pragma: no cover - json.loads found it, the scanner must too
        return []
    start, end = span
    line = _line_of(text, start)
    raw = text[start + 1 : end - 1]
    if raw != data["image"]:  # escapes inside the string: cannot rewrite in place safely
        problem = (f"the image string {data['image']!r} is written with escapes; lockdock "
                   "cannot rewrite it in place, left alone")
        return [_unrewritable(path, line, start + 1, end - 1, data["image"], problem)]
    return [_literal(path, line, start + 1, raw, quote='"')]


# --- compose files --------------------------------------------------------------------

_YAML_PROPERTIES = re.compile(r"(?:[&!]\S*\s+)*")  # an anchor (&name) and/or tag (!!str)


def _compose_reference(path: Path, text: str, node: yaml.ScalarNode) -> Reference:
    """The reference an ``image:`` scalar node holds, located in ``text``."""
    value, style = str(node.value), node.style or ""
    start, end = node.start_mark.index, node.end_mark.index
    properties = _YAML_PROPERTIES.match(text, start, end)
    start = properties.end() if properties else start
    raw = text[start:end]
    if style in ('"', "'") and raw[1:-1] == value:
        return _literal(path, _line_of(text, start), start + 1, value, quote=style)
    if style == "" and raw == value:
        return _literal(path, _line_of(text, start), start, value)
    if style in ("|", ">"):  # a block scalar holding one line is that line: pin it there
        header = raw.find("\n") + 1
        content = list(re.finditer(r"\S.*", raw[header:]))
        if header and len(content) == 1 and content[0].group().rstrip() == value.rstrip("\n"):
            at = start + header + content[0].start()
            return _literal(path, _line_of(text, at), at, value.rstrip("\n"))
    problem = (f"the image {value!r} is written across lines, folded or with escapes; "
               "lockdock cannot rewrite it in place, left alone")
    return _unrewritable(path, _line_of(text, start), start, end, value.strip(), problem)


def compose_references(path: Path, text: str) -> list[Reference]:
    """Every ``image:`` scalar of a compose file, with its exact span and quoting."""
    import yaml

    documents = compose_all_yaml(text, path, PinError)
    images: list[yaml.ScalarNode] = []
    keys: set[int] = set()
    seen: set[int] = set()  # an alias is the anchored node itself: visited once

    def walk(node: yaml.Node) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                keys.add(id(key))
                if (isinstance(key, yaml.ScalarNode) and key.value == "image"
                        and isinstance(value, yaml.ScalarNode)):
                    if id(value) not in seen:
                        seen.add(id(value))
                        images.append(value)
                else:
                    walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    for document in documents:
        if document is not None:
            walk(document)
    found = []
    for node in images:
        reference = _compose_reference(path, text, node)
        if id(node) in keys:  # `image: *a` where &a anchors a key: rewriting it renames the key
            problem = (f"the image {node.value!r} is an alias of a mapping key; lockdock "
                       "cannot rewrite it in place, left alone")
            reference = _unrewritable(path, reference.line, reference.start, reference.end,
                                      reference.text, problem)
        found.append(reference)
    return sorted(found, key=lambda r: r.start)


def references_in(path: Path, text: str) -> list[Reference]:
    kind = kind_of(path)
    if kind == DEVCONTAINER:
        return devcontainer_references(path, text)
    if kind == COMPOSE:
        return compose_references(path, text)
    return dockerfile_references(path, text)


def default_files(root: Path) -> list[Path]:
    """Dockerfiles, devcontainer.json and compose files under ``root`` (sorted)."""
    found: list[Path] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part in _SKIP_DIRS for part in relative.parts[:-1]) or not path.is_file():
            continue
        name = path.name
        lower = name.lower()
        if (
            name.startswith("Dockerfile")
            or lower.endswith(".dockerfile")
            or (name == "devcontainer.json" and path.parent.name == ".devcontainer")
            or name == ".devcontainer.json"
            or re.fullmatch(r"(docker-)?compose[\w.-]*\.ya?ml", lower)
        ):
            found.append(path)
    return found
