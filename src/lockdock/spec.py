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


def validate_environment_file(path: Path, known_platforms: Sequence[str]) -> None:
    """Reject what conda-lock would misread or crash on, naming the file and line.

    Checks: YAML syntax, a mapping at the top, only known top-level keys, ``channels`` and
    ``platforms`` as lists of strings, known platforms, every conda entry a valid match spec
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
        key = key_node.value
        if key not in ENVIRONMENT_KEYS:
            raise SpecError(
                f"{_at(path, key_node)}: unknown top-level key {key!r}; an environment "
                f"file may hold {', '.join(sorted(ENVIRONMENT_KEYS))}."
            )
        values[key] = value_node
    for key in ("channels", "platforms"):
        node = values.get(key)
        if node is None:
            continue
        if not isinstance(node, yaml.SequenceNode) or not all(
            isinstance(item, yaml.ScalarNode) for item in node.value
        ):
            raise SpecError(f"{_at(path, node)}: `{key}:` must be a list of strings.")
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
        raise SpecError(f"{_at(path, dependencies)}: `dependencies:` must be a list.")
    for item in dependencies.value:
        if isinstance(item, yaml.ScalarNode):
            _check_match_spec(path, item)
        elif isinstance(item, yaml.MappingNode):
            for sub_key, sub_value in item.value:
                if sub_key.value != "pip":
                    raise SpecError(
                        f"{_at(path, sub_key)}: only a `pip:` list may be nested in "
                        f"`dependencies:`, not {sub_key.value!r}."
                    )
                if isinstance(sub_value, yaml.ScalarNode) and sub_value.value in ("", "~"):
                    continue  # `pip:` left empty (or emptied by a selector)
                if not isinstance(sub_value, yaml.SequenceNode):
                    raise SpecError(f"{_at(path, sub_value)}: `pip:` must be a list.")
                for requirement in sub_value.value:
                    _check_pip_requirement(path, requirement)
        else:
            raise SpecError(f"{_at(path, item)}: a dependency must be a match spec string.")


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
    if not isinstance(node.value, str) or not text.strip():
        raise SpecError(f"{_at(path, node)}: a `pip:` entry must be a requirement string.")
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
