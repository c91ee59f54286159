"""The project model: which flavors exist and which input files define each one's lock.

A lockdock project is a directory holding ``environment.yml`` and ``images/``. Every
folder of ``images/`` except ``base/`` is a flavor; each has a ``Dockerfile`` and a
``flavor.toml`` saying what it is (lockdock.flavors: accelerator kind, parent flavor, source
files, platforms, moving tags, virtual packages). The flavor marked ``default = true`` is
locked into the top-level ``conda-lock.yml``; every other flavor into
``images/<flavor>/conda-lock.yml``.

Pure: reads the directory tree, never writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockdock.errors import LockdockError, SpecError, UsageError
from lockdock.flavors import (
    ENVIRONMENT_FILE,
    FLAVOR_FILE,
    LOCK_FILE,
    VIRTUAL_PACKAGES_FILE,
    Flavor,
    FlavorFile,
    parse_flavor_file,
    resolve_flavors,
)

__all__ = ["ENVIRONMENT_FILE", "LOCK_FILE", "VIRTUAL_PACKAGES_FILE", "Flavor", "Project",
           "load_project"]  # fmt: skip

@dataclass(frozen=True)
class Project:
    root: Path
    environment_file: Path
    flavors: dict[str, Flavor]

    @property
    def images_dir(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def base_dir(self) -> Path:
        return self.images_dir / BASE_DIR_NAME

    def select(self, names: Iterable[str] = ()) -> list[Flavor]:
        """The named flavors, or every flavor when none is named."""
        wanted = list(names)
        if not wanted:
            return [self.flavors[n] for n in sorted(self.flavors)]
        unknown = [n for n in wanted if n not in self.flavors]
        if unknown:
            known = ", ".join(sorted(self.flavors)) or "none"
            raise UsageError(
                f"Unknown flavor {', '.join(map(repr, unknown))} in project {self.root}: "
                f"known flavors are {known} (every folder of images/ except base/)."
            )
        return [self.flavors[n] for n in dict.fromkeys(wanted)]

    def one(self, name: str) -> Flavor:
        return self.select([name])[0]


IMAGES_DIR = "images"
BASE_DIR_NAME = "base"


def read_flavor_file(directory: Path) -> FlavorFile:
    from lockdock.textio import read_text

    path = directory / FLAVOR_FILE
    if not (directory / "Dockerfile").is_file():
        raise SpecError(
            f"Flavor folder {directory} has no Dockerfile: every folder of images/ except "
            "base/ is a flavor and needs one (remove the folder if it is not a flavor)."
        )
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise SpecError(
            f"Flavor folder {directory} has no {FLAVOR_FILE}: every flavor declares what it "
            'is there, at least `accelerator = "cpu"` (see docs/architecture.md, flavors).'
        ) from None
    return parse_flavor_file(directory.name, directory, text)


def load_project(root: Path | str = ".") -> Project:
    """Discover the project rooted at ``root`` (the current directory for the CLI)."""
    root = Path(root).resolve()
    env_file = root / ENVIRONMENT_FILE
    if not env_file.is_file():
        raise SpecError(
            f"No {ENVIRONMENT_FILE} in {root}: lockdock commands run in a project directory "
            "holding environment.yml and images/<flavor>/{Dockerfile,flavor.toml}."
        )
    images = root / IMAGES_DIR
    files: dict[str, FlavorFile] = {}
    if images.is_dir():
        for directory in sorted(p for p in images.iterdir() if p.is_dir()):
            if directory.name == BASE_DIR_NAME or directory.name.startswith("."):
                continue
            files[directory.name] = read_flavor_file(directory)
    return Project(root=root, environment_file=env_file, flavors=resolve_flavors(root, files))


# --- environment-file validation ------------------------------------------------------

#: Top-level keys of an environment file: conda's own plus conda-lock's extensions.
ENVIRONMENT_KEYS = frozenset(
    {
        "name",
        "channels",
        "dependencies",
        "platforms",
        "prefix",
        "variables",
        "category",
        "pip-repositories",
        "allow-pypi-requests",
    }
)


def _yaml_error(path: Path, error: Exception) -> LockdockError:
    from lockdock.textio import yaml_error

    return yaml_error(path, error)


def _at(path: Path, node: Any) -> str:
    return f"{path}, line {node.start_mark.line + 1}"


_YAML_TAG = "tag:yaml.org,2002:"


def _is_string(node: Any) -> bool:
    """A scalar that YAML reads as a string (``1.5``, ``true``, ``~`` are not)."""
    import yaml

    return isinstance(node, yaml.ScalarNode) and node.tag == f"{_YAML_TAG}str"


def describe_node(node: Any, *, quote_hint: bool = True) -> str:
    """What a YAML node is, in plain words, for "expected X, not Y" messages."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = str(node.tag).removeprefix(_YAML_TAG)
    hint = " (quote it to make it a string)" if quote_hint else ""
    if kind == "str":
        return repr(node.value)
    if kind == "null":
        return "an empty value"
    if kind in ("int", "float"):
        return f"the number {node.value}{hint}"
    if kind == "bool":
        return f"the true/false value {node.value}{hint}"
    return f"{node.value!r}, which YAML reads as a {kind}{hint}"


def validate_environment_file(path: Path, known_platforms: Sequence[str]) -> None:
    """Reject what conda-lock would misread or crash on, naming the file and line.

    Checks: YAML syntax, a mapping at the top, only known top-level keys (plain names),
    ``channels``, ``platforms`` and ``pip-repositories`` as lists of strings (as YAML reads
    them: ``1.5`` is a number), ``category`` a string, ``allow-pypi-requests`` a boolean,
    known platforms, every conda entry a valid match spec
    (py-rattler's parser, the one the solver uses), every ``pip:`` entry a valid PEP 508
    requirement.
    """
    import yaml

    from lockdock.textio import compose_yaml, read_text

    try:
        text = read_text(path)
    except FileNotFoundError as error:
        raise SpecError(f"Cannot read {path}: {error.strerror}.") from None
    root = compose_yaml(text, path)  # not UTF-8, malformed, duplicate keys: SpecError
    if not isinstance(root, yaml.MappingNode):
        raise SpecError(
            f"{path} must be a YAML mapping with `channels:`, `dependencies:` and "
            "`platforms:` (a conda environment file as conda-lock reads it)."
        )
    values: dict[str, Any] = {}
    for key_node, value_node in root.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise SpecError(
                f"{_at(path, key_node)}: a top-level key must be a plain name, not "
                f"{describe_node(key_node)}; an environment file may hold "
                f"{', '.join(sorted(ENVIRONMENT_KEYS))}."
            )
        key = key_node.value
        if key not in ENVIRONMENT_KEYS:
            raise SpecError(
                f"{_at(path, key_node)}: unknown top-level key {key!r}; an environment "
                f"file may hold {', '.join(sorted(ENVIRONMENT_KEYS))}."
            )
        values[key] = value_node
    for key in ("channels", "platforms", "pip-repositories"):
        node = values.get(key)
        if node is None:
            continue
        if not isinstance(node, yaml.SequenceNode):
            raise SpecError(
                f"{_at(path, node)}: `{key}:` must be a list of strings, not "
                f"{describe_node(node, quote_hint=False)}."
            )
        for item in node.value:
            if not _is_string(item):
                raise SpecError(
                    f"{_at(path, item)}: each entry of `{key}:` must be a string, not "
                    f"{describe_node(item)}."
                )
    category = values.get("category")
    if category is not None and not _is_string(category) and category.tag != f"{_YAML_TAG}null":
        raise SpecError(
            f"{_at(path, category)}: `category:` must be a category name such as `dev`, not "
            f"{describe_node(category)}."
        )
    allow_pypi = values.get("allow-pypi-requests")
    if allow_pypi is not None and allow_pypi.tag != f"{_YAML_TAG}bool":
        raise SpecError(
            f"{_at(path, allow_pypi)}: `allow-pypi-requests:` must be true or false, not "
            f"{describe_node(allow_pypi)}."
        )
    for item in values["platforms"].value if "platforms" in values else ():
        if item.value not in known_platforms:
            raise SpecError(
                f"{_at(path, item)}: unknown platform {item.value!r}; lockdock locks "
                f"{', '.join(known_platforms)}."
            )
    dependencies = values.get("dependencies")
    if dependencies is None:
        return
    if not isinstance(dependencies, yaml.SequenceNode):
        raise SpecError(
            f"{_at(path, dependencies)}: `dependencies:` must be a list of match specs, not "
            f"{describe_node(dependencies, quote_hint=False)}."
        )
    for item in dependencies.value:
        if _is_string(item):
            _check_match_spec(path, item)
        elif isinstance(item, yaml.MappingNode):
            for sub_key, sub_value in item.value:
                if not _is_string(sub_key) or sub_key.value != "pip":
                    raise SpecError(
                        f"{_at(path, sub_key)}: only a `pip:` list may be nested in "
                        f"`dependencies:`; this entry's key is {describe_node(sub_key)}."
                    )
                if sub_value.tag == f"{_YAML_TAG}null" or sub_value.value == "":
                    continue  # `pip:` left empty (or emptied by a selector)
                if not isinstance(sub_value, yaml.SequenceNode):
                    raise SpecError(
                        f"{_at(path, sub_value)}: `pip:` must be a list of requirements, not "
                        f"{describe_node(sub_value, quote_hint=False)}."
                    )
                for requirement in sub_value.value:
                    _check_pip_requirement(path, requirement)
        else:
            raise SpecError(
                f"{_at(path, item)}: a dependency must be a match spec string (e.g. "
                f"`numpy >=1.26`) or a `pip:` list, not {describe_node(item)}."
            )


def _check_match_spec(path: Path, node: Any) -> None:
    from rattler import MatchSpec

    spec = str(node.value)
    try:
        MatchSpec(spec)
    except Exception as error:  # rattler's InvalidMatchSpecError and friends
        raise SpecError(
            f"{_at(path, node)}: invalid match spec {spec!r}: {' '.join(str(error).split())}."
        ) from None


def _check_pip_requirement(path: Path, node: Any) -> None:
    from packaging.requirements import InvalidRequirement, Requirement

    text = str(getattr(node, "value", ""))
    if not _is_string(node) or not text.strip():
        raise SpecError(
            f"{_at(path, node)}: a `pip:` entry must be a requirement string (e.g. "
            f"`requests>=2`), not {describe_node(node)}."
        )
    if text.startswith("-e "):
        raise SpecError(
            f"{_at(path, node)}: editable pip requirement {text!r} cannot be locked."
        )
    try:
        Requirement(text)
    except InvalidRequirement as error:
        raise SpecError(
            f"{_at(path, node)}: invalid pip requirement {text!r}: "
            f"{' '.join(str(error).split())}."
        ) from None
