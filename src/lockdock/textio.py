"""Reading the user's text files: the one place that decodes them and parses their YAML.

Every file a user writes or edits (environment.yml, virtual-packages.yml, conda-lock.yml,
images.lock.json, the Dockerfiles and compose files ``pin`` rewrites) is read through
``read_text``, and every YAML document through ``load_yaml``/``compose_yaml``, so that the
same mistakes get the same one-paragraph answer everywhere:

- bytes that are not UTF-8 (a Latin-1 editor, a PowerShell ``>`` redirect writing UTF-16):
  ``SpecError`` "FILE is not UTF-8 text (byte 0x.. at line L)", never a ``UnicodeDecodeError``;
- a file that cannot be read at all (permissions, a directory in its place): ``LocalFileError``
  naming it; a missing file stays ``FileNotFoundError`` because what that means (a lock not
  made yet: exit 6; no project: exit 3) is the caller's knowledge;
- a YAML mapping with the same key twice: refused, naming the key and both lines. PyYAML (and
  conda) keep the last one silently, so two ``dependencies:`` blocks drop the first block's
  packages from the lock without a word;
- malformed YAML: ``yaml_error``, the one formatter (file, line, column, PyYAML's problem);
- JSON (images.lock.json, devcontainer.json, lockdock's records) through ``load_json``:
  malformed, nested too deeply for Python's parser (``[`` x 100000 is a RecursionError, not
  a JSONDecodeError) or holding a number Python refuses to convert: the caller's error class
  naming the file, never a traceback.

Standard library + PyYAML only: the installer reads locks with it inside image builds
(``INSTALLER_SOURCES``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from lockdock.errors import LockdockError, SpecError, UsageError
from lockdock.fsutil import local_file_error

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _loader_class() -> type[Any]:
    """libyaml's parser when PyYAML was built with it (a lock may hold thousands of entries);
    the constructor, where duplicate keys are judged, is Python either way."""
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def decode_text(data: bytes, path: Path | str) -> str:
    """``data`` as UTF-8, else SpecError naming the first bad byte and its line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        byte = data[error.start]
        line = data.count(b"\n", 0, error.start) + 1
        hint = "Save it as UTF-8"
        if data.startswith(_UTF16_BOMS):
            hint += " (it looks like UTF-16, e.g. from a PowerShell `>` redirect)"
        raise SpecError(
            f"{path} is not UTF-8 text (byte 0x{byte:02x} at line {line}). {hint}; lockdock "
            "reads every input file as UTF-8."
        ) from None


def read_text(path: Path | str) -> str:
    """The text of a user's file, decoded as UTF-8 (see the module docstring for errors)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise local_file_error(path, error, "read") from None
    return decode_text(data, path)


# --- YAML ------------------------------------------------------------------------------


def yaml_error(
    path: Path | str, error: Exception, kind: type[LockdockError] = SpecError
) -> LockdockError:
    """The one message for malformed YAML: file, line and column, PyYAML's problem."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    detail = " ".join(str(getattr(error, "problem", "") or error).split())
    return kind(f"{path} is not valid YAML{where}: {detail}.")


def check_unique_keys(
    node: yaml.Node, path: Path | str, kind: type[LockdockError] = SpecError
) -> None:
    """Refuse a mapping (anywhere in ``node``) that names one key twice."""
    seen: set[int] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in current.value:
                stack.append(value)
                if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                    stack.append(key)
                    continue
                line = key.start_mark.line + 1
                identity = (key.tag, key.value)
                if identity in first:
                    raise kind(
                        f"{path}: duplicate key `{key.value}` at line {line} (first at line "
                        f"{first[identity]}). YAML keeps only the last one and silently drops "
                        "the other; merge them into one."
                    )
                first[identity] = line
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _nodes(text: str, path: Path | str, kind: type[LockdockError]) -> Iterator[yaml.Node]:
    loader = _loader_class()(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                check_unique_keys(node, path)  # always exit 3, whoever reads the file
            yield node
    except yaml.YAMLError as error:
        raise yaml_error(path, error, kind) from None
    finally:
        loader.dispose()


def compose_yaml(
    text: str, path: Path | str, kind: type[LockdockError] = SpecError
) -> yaml.Node | None:
    """The node tree of a one-document YAML ``text`` (positions kept), duplicate keys refused."""
    documents = compose_all_yaml(text, path, kind)
    if len(documents) > 1:
        raise kind(f"{path} holds {len(documents)} YAML documents (`---`); expected one.")
    return documents[0] if documents else None


def compose_all_yaml(
    text: str, path: Path | str, kind: type[LockdockError] = SpecError
) -> list[yaml.Node]:
    """Every document's node tree (compose files may hold several), duplicate keys refused."""
    return list(_nodes(text, path, kind))


def load_yaml(text: str, path: Path | str, kind: type[LockdockError] = SpecError) -> Any:
    """Python data of a one-document YAML ``text`` (safe types only), duplicate keys refused."""
    node = compose_yaml(text, path, kind)
    if node is None:
        return None
    loader = _loader_class()("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise yaml_error(path, error, kind) from None
    finally:
        loader.dispose()


def read_yaml(path: Path | str, kind: type[LockdockError] = SpecError) -> Any:
    """``load_yaml(read_text(path))``; FileNotFoundError left to the caller."""
    return load_yaml(read_text(path), path, kind)


# --- JSON ------------------------------------------------------------------------------


def load_json(
    text: str, path: Path | str, kind: type[LockdockError] = SpecError, *,
    what: str = "JSON", fix: str = "",
) -> Any:
    """The JSON document ``text`` of ``path``; ``kind`` naming the file, the position and
    ``fix`` (what to do) when it cannot be read."""
    after = f" {fix}" if fix else ""
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise kind(f"{path} is not valid {what} (line {problem.lineno}, column "
                   f"{problem.colno}): {problem.msg}.{after}") from None
    except RecursionError:
        raise kind(f"{path} cannot be read as {what}: its arrays/objects are nested more "
                   f"than about {sys.getrecursionlimit()} levels deep, beyond what Python's "
                   f"JSON parser reads.{after}") from None
    except ValueError as problem:  # an integer of more digits than Python converts
        detail = str(problem).split(";")[0]  # not its advice to call sys.set_int_max_str_digits
        raise kind(f"{path} cannot be read as {what}: {detail}.{after}") from None


# --- environment variables ---------------------------------------------------------------


def env_number(name: str, default: float, *, integer: bool = True, minimum: float = 0) -> float:
    """A numeric setting from the environment variable ``name`` (``default`` when unset or
    empty); UsageError (exit 2) naming the variable and its value when it is not a number
    of the right kind, as ``SOURCE_DATE_EPOCH`` is treated."""
    import os

    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or value < minimum or value != value:  # NaN
        kind = "a whole number" if integer else "a number"
        raise UsageError(
            f"Environment variable {name}={raw!r} is not {kind} >= {minimum:g}: set it to "
            f"one (default {default:g}) or unset it."
        )
    return value


#: The largest ``SOURCE_DATE_EPOCH`` a timestamp can carry: 9999-12-31T23:59:59Z.
MAX_SOURCE_DATE_EPOCH = 253402300799


def source_date_epoch(
    raw: str | None = None, kind: type[LockdockError] = UsageError
) -> int | None:
    """``SOURCE_DATE_EPOCH`` (``raw``, else the environment's) as seconds; None when unset or
    empty. The one parser of it: the specification
    (reproducible-builds.org/specs/source-date-epoch) asks for ASCII digits only, so a
    negative, fractional or signed value is ``kind`` (exit 2 by default) naming it, and so is
    one past year 9999, which no timestamp can carry."""
    import os

    value = (os.environ.get("SOURCE_DATE_EPOCH", "") if raw is None else raw).strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):
        raise kind(
            f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds since "
            "1970-01-01 UTC (ASCII digits only, no sign): set it to one, e.g. "
            "`git log -1 --format=%ct`, or unset it."
        )
    if len(value) > len(str(MAX_SOURCE_DATE_EPOCH)) or int(value) > MAX_SOURCE_DATE_EPOCH:
        raise kind(
            f"SOURCE_DATE_EPOCH={value!r} is after the year 9999 (at most "
            f"{MAX_SOURCE_DATE_EPOCH}): it is a number of seconds since 1970-01-01 UTC, "
            "not milliseconds; set it to one, or unset it."
        )
    return int(value)
