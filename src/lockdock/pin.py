"""Pin a project's image references to digests: Dockerfiles, devcontainer.json, compose files.

Finding references and planning the rewrite are pure (text in, spans and replacements out);
the registry lookup is passed in as a function, and writing is one atomic replace per file
(``apply``). Only the reference's characters change: comments, quoting, indentation and
everything else in the file stay byte for byte.

What counts as a reference:

- Dockerfile: the image of every ``FROM`` (flags such as ``--platform=`` skipped, ``AS name``
  recorded so that later ``FROM name`` / ``COPY --from=name`` are stage names, not images)
  and ``COPY --from=<image>``. References built from ``ARG``s (``$VAR``/``${VAR}``) cannot be
  pinned in place; they are left alone with a note.
- devcontainer.json: the top-level ``image``. The file is JSON with comments and trailing
  commas (the devcontainer spec's JSONC); a malformed file is a PinError with its position.
- compose files: every ``image:`` key (under services, or in ``x-`` extension blocks),
  located through a YAML parse and rewritten in place with the original quoting.

A reference matches a target ``repo`` when it names the same repository (``debian`` and
``docker.io/library/debian`` are the same); a target ``repo:tag`` also requires that tag.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lockdock.errors import PinError, UsageError
from lockdock.fsutil import write_texts_atomic
from lockdock.registry import ImageRef, parse_reference
from lockdock.textio import compose_all_yaml, load_json, read_text
from lockdock.workspace import STATE_DIR

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
    ref: ImageRef | None  # None: not a literal reference (see note)
    note: str | None = None
    quote: str = ""  # compose: the YAML quoting of the scalar, kept when rewriting

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Rewrite:
    reference: Reference
    new_text: str


@dataclass
class PinPlan:
    """What ``pin`` would do: rewrites per file, findings for ``--check``, notes."""

    target: ImageRef
    rewrites: dict[Path, list[Rewrite]] = field(default_factory=dict)
    already_pinned: list[Reference] = field(default_factory=list)
    unpinned: list[tuple[Reference, str]] = field(default_factory=list)  # (ref, digest)
    outdated: list[tuple[Reference, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files_without_match: list[Path] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return len(self.already_pinned) + len(self.unpinned) + len(self.outdated)


# --- finding references (pure) --------------------------------------------------------


def kind_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".json"):
        return DEVCONTAINER
    if name.endswith((".yml", ".yaml")):
        return COMPOSE
    return DOCKERFILE


def _literal(path: Path, line: int, start: int, text: str, quote: str = "") -> Reference:
    if "$" in text:
        note = (
            f"{path}:{line}: {text} is built from variables ($...); lockdock pins literal "
            "references only (pin the variable's value instead)."
        )
        return Reference(path, line, start, start + len(text), text, None, note, quote)
    try:
        ref = parse_reference(text)
    except UsageError:
        note = f"{path}:{line}: {text!r} is not an image reference lockdock can parse; left alone."
        return Reference(path, line, start, start + len(text), text, None, note, quote)
    return Reference(path, line, start, start + len(text), text, ref, None, quote)


def dockerfile_references(path: Path, text: str) -> list[Reference]:
    """Images named by ``FROM`` and ``COPY --from=`` (stage names excluded)."""
    found: list[Reference] = []
    stages: set[str] = set()
    offset = 0
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        line_start = offset
        offset += len(line)
        tokens = [(m.group(), m.start()) for m in re.finditer(r"\S+", line)]
        if not tokens or tokens[0][0].startswith("#"):
            continue
        instruction = tokens[0][0].upper()
        if instruction == "FROM":
            args = [t for t in tokens[1:] if not t[0].startswith("--")]
            if not args:
                continue
            image, column = args[0]
            if len(args) >= 3 and args[1][0].upper() == "AS":
                stages.add(args[2][0].lower())
            if image.lower() in stages or image == "scratch":
                continue
            found.append(_literal(path, number, line_start + column, image))
        elif instruction == "COPY":
            for token, column in tokens[1:]:
                if not token.startswith("--from="):
                    continue
                source = token[len("--from=") :]
                if source.lower() in stages or source.isdigit():
                    continue
                found.append(
                    _literal(path, number, line_start + column + len("--from="), source)
                )
    return found


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


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


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
        note = f"{path}:{line}: the image string contains escapes; left alone."
        return [Reference(path, line, start + 1, end - 1, raw, None, note, '"')]
    return [_literal(path, line, start + 1, raw, quote='"')]


def compose_references(path: Path, text: str) -> list[Reference]:
    """Every ``image:`` scalar of a compose file, with its exact span and quoting."""
    import yaml

    documents = compose_all_yaml(text, path, PinError)
    found: list[Reference] = []
    seen: set[int] = set()

    def walk(node: yaml.Node) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if (
                    isinstance(key, yaml.ScalarNode)
                    and key.value == "image"
                    and isinstance(value, yaml.ScalarNode)
                    and value.style in (None, "", '"', "'")
                ):
                    quote = value.style or ""
                    start = value.start_mark.index + len(quote)
                    end = value.end_mark.index - len(quote)
                    found.append(_literal(path, value.start_mark.line + 1, start, text[start:end],
                                          quote=quote))
                    if text[start:end] != value.value:  # escapes inside quotes: not in place
                        found[-1] = Reference(path, value.start_mark.line + 1, start, end,
                                              text[start:end], None,
                                              f"{path}:{value.start_mark.line + 1}: quoted "
                                              "image with escapes; left alone.")
                else:
                    walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    for document in documents:
        if document is not None:
            walk(document)
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


# --- planning (pure: the registry is a function passed in) ----------------------------


def matches(reference: ImageRef, target: ImageRef) -> bool:
    if reference.key != target.key:
        return False
    if target.tag is None:
        return True
    return (reference.tag or ("latest" if reference.digest is None else None)) == target.tag


def plan_pin(
    target: ImageRef,
    files: dict[Path, str],
    resolve: Callable[[ImageRef], str],
) -> PinPlan:
    """Decide every rewrite. ``resolve(ref)`` gives the digest ``ref``'s tag points at now.

    Raises PinError when no file references the target (naming the files read).
    """
    plan = PinPlan(target=target)
    digests: dict[tuple[str, str, str], str] = {}
    for path, text in files.items():
        references = references_in(path, text)
        plan.notes.extend(r.note for r in references if r.note)
        hits = [r for r in references if r.ref is not None and matches(r.ref, target)]
        if not hits:
            plan.files_without_match.append(path)
            continue
        for reference in hits:
            assert reference.ref is not None
            if reference.ref.tag is None and reference.ref.digest is not None:
                plan.notes.append(
                    f"{reference.where}: {reference.text} is pinned by digest with no tag; "
                    "lockdock cannot tell which tag it follows, left alone."
                )
                continue
            tagged = reference.ref.with_tag(reference.ref.tag or "latest")
            key = (*tagged.key, tagged.tag or "latest")
            if key not in digests:
                digests[key] = resolve(tagged)
            digest = digests[key]
            new_text = tagged.pinned(digest)
            if reference.ref.digest == digest:
                plan.already_pinned.append(reference)
                continue
            (plan.unpinned if reference.ref.digest is None else plan.outdated).append(
                (reference, digest)
            )
            plan.rewrites.setdefault(path, []).append(Rewrite(reference, new_text))
    if plan.matched == 0:
        names = ", ".join(str(p) for p in files) or "(no files found)"
        notes = "".join(f" Note: {note}" for note in plan.notes)
        raise PinError(
            f"No reference to {target} in {names}: nothing to pin.{notes}",
            hint="Name the files with --file, or check the repository and tag.",
        )
    return plan


def rewritten(text: str, rewrites: Sequence[Rewrite]) -> str:
    """``text`` with each rewrite's span replaced (spans do not overlap)."""
    out = text
    for rewrite in sorted(rewrites, key=lambda r: r.reference.start, reverse=True):
        ref = rewrite.reference
        out = out[: ref.start] + rewrite.new_text + out[ref.end :]
    return out


def check_findings(plan: PinPlan) -> list[str]:
    lines = [
        f"{ref.where}: {ref.text} is not pinned (tag now at {digest})"
        for ref, digest in plan.unpinned
    ]
    lines += [
        f"{ref.where}: {ref.text} is outdated (tag now at {digest})"
        for ref, digest in plan.outdated
    ]
    return lines


# --- edges ----------------------------------------------------------------------------


def read_files(paths: Iterable[Path]) -> dict[Path, str]:
    files: dict[Path, str] = {}
    for path in paths:
        if path.is_dir():
            raise PinError(f"{path} is a directory, not a file to pin.")
        try:
            files[path] = read_text(path)
        except FileNotFoundError:
            raise UsageError(f"File {path} does not exist.") from None
    return files


def apply(plan: PinPlan, files: dict[Path, str]) -> list[Path]:
    """Write every changed file, all or none (``write_texts_atomic``: through symlinks, and
    a file that cannot be written leaves the others unchanged too); returns them."""
    texts = {path: rewritten(files[path], rewrites) for path, rewrites in plan.rewrites.items()}
    write_texts_atomic(texts, files)
    return list(texts)


def pin(
    target_text: str,
    paths: Sequence[Path],
    *,
    check: bool = False,
    resolve: Callable[[ImageRef], str] | None = None,
    report: Callable[[str], None] = print,
) -> PinPlan:
    """``lockdock pin``: resolve, then rewrite (or, with ``check``, only judge) the files.

    Every file is read and parsed and every tag resolved before anything is written, so a
    malformed file or an unknown tag leaves all files untouched.
    """
    target = parse_reference(target_text)
    if target.digest is not None:
        raise UsageError(
            f"{target_text} already names a digest: give the tag to follow (repo:tag) or the "
            "repository (every tag referenced is pinned)."
        )
    if resolve is None:
        from lockdock.registry import RegistryClient

        resolve = RegistryClient().resolve
    files = read_files(paths)
    plan = plan_pin(target, files, resolve)
    for note in plan.notes:
        report(f"note: {note}")
    for path in plan.files_without_match:
        report(f"{path}: no reference to {target}")
    if check:
        findings = check_findings(plan)
        if findings:
            raise PinError(
                f"{len(findings)} reference(s) to {target} are not pinned to the tag's current "
                "digest: " + "; ".join(findings) + ".",
                hint=f"Run `lockdock pin {target_text}`.",
            )
        report(f"{plan.matched} reference(s) to {target}: all pinned to current digests")
        return plan
    for ref in plan.already_pinned:
        report(f"{ref.where}: {ref.text} already pinned")
    apply(plan, files)  # LocalFileError naming the file, every file left as it was
    for rewrites in plan.rewrites.values():
        for rewrite in rewrites:
            report(f"{rewrite.reference.where}: {rewrite.reference.text} -> {rewrite.new_text}")
    return plan
