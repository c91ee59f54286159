"""Flavors as data: ``images/<flavor>/flavor.toml`` says what a flavor is.

::

    accelerator = "cuda"               # a kind of lockdock.accelerators (required at a root)
    extends = "cpu"                    # parent flavor: its sources come first, its settings
                                       # are inherited (chains of any length)
    environment = ["environment.yml"]  # own sources, relative to the folder, merged after the
                                       # parent's (default: environment.yml if present)
    default = true                     # locked into the top-level conda-lock.yml (one at most)
    platforms = ["linux-64"]           # conda subdirs (default: the sources' `platforms:`)
    moving-tags = ["cuda"]             # published moving tags (default: [<flavor>])
    virtual-packages = "virtual-packages.yml"  # conda-lock --virtual-package-spec file
    with-cuda = "12.0"                 # conda-lock --with-cuda; or without-cuda = true
    pip-indexes = ["https://…/simple"] # extra pip indexes for the pip part
    solo-layer-mib = 64                # installed MiB from which a package gets its own
                                       # image layer (default 32; README "Layers")

A root flavor (no ``extends``) starts from the project's ``environment.yml``. Parsing is pure
(``parse_flavor_file``); ``resolve_flavors`` turns the parsed files into chains, refusing an
unknown parent, a cycle, a source listed twice, or two defaults — each a SpecError (exit 3)
naming the file and key. A flavor's name (its folder's) and its `moving-tags` are checked
against lockdock.tags' rules here too, so that no build or push starts with a tag that
cannot be pushed, or an empty one Docker would push as `latest`.

The virtual packages are one conda-lock mode, never a mix: a flavor's own `virtual-packages`,
`with-cuda` or `without-cuda`, or else its folder's virtual-packages.yml, replaces the
parent's setting as a whole; a key next to that file, a `virtual-packages` naming no file or
a `with-cuda` py-rattler cannot read is refused (exit 3).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockdock.accelerators import accelerator as accelerator_kind
from lockdock.errors import SpecError
from lockdock.platform import Platform
from lockdock.tags import FLAVOR_NAME_RULE, flavor_name_problem, moving_tag_problem
from lockdock.virtual_packages import with_cuda_problem

FLAVOR_FILE = "flavor.toml"
ENVIRONMENT_FILE = "environment.yml"
LOCK_FILE = "conda-lock.yml"
VIRTUAL_PACKAGES_FILE = "virtual-packages.yml"

#: key -> (type, inherited from the parent when absent)
_KEYS: dict[str, tuple[type, bool]] = {
    "accelerator": (str, True),
    "extends": (str, False),
    "environment": (list, False),
    "default": (bool, False),
    "platforms": (list, True),
    "moving-tags": (list, False),
    "virtual-packages": (str, True),
    "with-cuda": (str, True),
    "without-cuda": (bool, True),
    "pip-indexes": (list, True),
    "solo-layer-mib": (int, True),
}
_EXCLUSIVE = ("virtual-packages", "with-cuda", "without-cuda")


@dataclass(frozen=True)
class FlavorFile:
    """One ``flavor.toml`` as written (validated types, nothing resolved)."""

    name: str
    directory: Path
    path: Path
    values: Mapping[str, Any]


def parse_flavor_file(name: str, directory: Path, text: str) -> FlavorFile:
    path = directory / FLAVOR_FILE
    problem = flavor_name_problem(name)
    if problem is not None:
        folder = directory if name.isprintable() else f"{directory.parent}/{name!r}"
        raise SpecError(
            f"Flavor folder {folder}: the flavor name {problem}; a flavor's name (its "
            f"folder's) must be {FLAVOR_NAME_RULE}. Rename the folder."
        )
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path} is not valid TOML: {error}.") from None
    for key, value in values.items():
        if key not in _KEYS:
            raise SpecError(
                f"{path}: unknown key {key!r}; a flavor file may hold "
                f"{', '.join(sorted(_KEYS))} (see docs/architecture.md, flavors)."
            )
        kind = _KEYS[key][0]
        if not isinstance(value, kind) or (
            isinstance(value, list) and not all(isinstance(item, str) for item in value)
        ) or (kind is int and (isinstance(value, bool) or (isinstance(value, int) and value < 0))):
            want = {str: "a string", bool: "true or false", list: "a list of strings",
                    int: "a whole number of 0 or more"}[kind]
            raise SpecError(f"{path}: `{key}` must be {want}, not {value!r}.")
    given = [key for key in _EXCLUSIVE if key in values]
    if len(given) > 1:
        raise SpecError(f"{path}: `{given[0]}` and `{given[1]}` exclude each other.")
    for tag in values.get("moving-tags", ()):
        problem = moving_tag_problem(tag)
        if problem is not None:
            raise SpecError(f"{path}: `moving-tags`: {problem}.")
    problem = with_cuda_problem(values["with-cuda"]) if "with-cuda" in values else None
    if problem is not None:
        raise SpecError(
            f"{path}: `with-cuda = {values['with-cuda']!r}` {problem}; give a __cuda version "
            '(e.g. "12.0"), or "default" for conda-lock\'s default __cuda; write '
            "`without-cuda = true` for none."
        )
    if "accelerator" in values:
        accelerator_kind(values["accelerator"], source=f"{path}: `accelerator`")
    for platform in values.get("platforms", ()):
        try:
            Platform.parse(platform)
        except Exception as error:
            raise SpecError(f"{path}: `platforms`: {error}") from None
    return FlavorFile(name=name, directory=directory, path=path, values=values)


@dataclass(frozen=True)
class Flavor:
    name: str
    directory: Path
    dockerfile: Path
    #: The accelerator kind (lockdock.accelerators.KINDS key).
    accelerator: str
    parent: str | None
    #: The environment files conda-lock would be given, in ``-f`` order (the whole chain).
    environment_files: tuple[Path, ...]
    virtual_packages_file: Path | None
    with_cuda: str | None
    without_cuda: bool
    #: conda subdirs given in flavor.toml; empty: the sources' ``platforms:`` decide.
    platforms: tuple[str, ...]
    moving_tags: tuple[str, ...]
    pip_indexes: tuple[str, ...]
    lock_path: Path
    is_default: bool = False
    #: Installed MiB from which a package gets its own layer; None: the splitter's default.
    solo_layer_mib: int | None = None


def resolve_flavors(root: Path, files: Mapping[str, FlavorFile]) -> dict[str, Flavor]:
    """Every flavor with its chain resolved; reads nothing but whether the folder's implicit
    ``environment.yml`` / ``virtual-packages.yml`` and the declared sources exist."""
    defaults = [f for f in files.values() if f.values.get("default")]
    if len(defaults) > 1:
        raise SpecError(
            f"{defaults[1].path}: `default = true`, but {defaults[0].path} says so too; one "
            "flavor at most is locked into the top-level conda-lock.yml."
        )
    resolved: dict[str, Flavor] = {}

    def resolve(name: str, seen: tuple[str, ...]) -> Flavor:
        if name in resolved:
            return resolved[name]
        file = files[name]
        parent_name = file.values.get("extends")
        parent: Flavor | None = None
        if parent_name is not None:
            if parent_name not in files:
                raise SpecError(
                    f"{file.path}: `extends = {parent_name!r}` names no flavor; flavors are "
                    f"{', '.join(sorted(files))}."
                )
            chain = (*seen, name)
            if parent_name in chain:
                cycle = " -> ".join((*chain[chain.index(parent_name):], parent_name))
                raise SpecError(f"{file.path}: `extends` makes a cycle: {cycle}.")
            parent = resolve(parent_name, chain)
        flavor = _flavor(root, file, parent)
        resolved[name] = flavor
        return flavor

    for name in sorted(files):
        resolve(name, ())
    return resolved


def _flavor(root: Path, file: FlavorFile, parent: Flavor | None) -> Flavor:
    values = dict(file.values)

    def inherited(key: str, from_parent: Any, default: Any) -> Any:
        if key in values:
            return values[key]
        return from_parent if parent is not None else default

    kind = inherited("accelerator", parent.accelerator if parent else None, None)
    if kind is None:
        raise SpecError(
            f"{file.path}: `accelerator` is missing; a flavor without `extends` must say what "
            "it runs on (e.g. accelerator = \"cpu\")."
        )
    own = values.get("environment")
    if own is None:
        own = [ENVIRONMENT_FILE] if (file.directory / ENVIRONMENT_FILE).is_file() else []
    sources = [*(parent.environment_files if parent else (root / ENVIRONMENT_FILE,))]
    for relative in own:
        path = (file.directory / relative).resolve()
        if not path.is_file():
            raise SpecError(
                f"{file.path}: `environment` lists {relative}, which is not a file in "
                f"{file.directory}."
            )
        if path in sources:
            raise SpecError(
                f"{file.path}: `environment` lists {relative} which the chain already has "
                "(a source file may appear once)."
            )
        sources.append(path)
    vpkgs, with_cuda, without_cuda = _virtual_packages(file, parent)
    is_default = bool(values.get("default", False))
    return Flavor(
        name=file.name,
        directory=file.directory,
        dockerfile=file.directory / "Dockerfile",
        accelerator=kind,
        parent=parent.name if parent else None,
        environment_files=tuple(sources),
        virtual_packages_file=vpkgs,
        with_cuda=with_cuda,
        without_cuda=without_cuda,
        platforms=tuple(inherited("platforms", parent.platforms if parent else (), ())),
        moving_tags=tuple(values.get("moving-tags", [file.name])),
        pip_indexes=tuple(inherited("pip-indexes", parent.pip_indexes if parent else (), ())),
        lock_path=root / LOCK_FILE if is_default else file.directory / LOCK_FILE,
        is_default=is_default,
        solo_layer_mib=inherited("solo-layer-mib", parent.solo_layer_mib if parent else None,
                                 None),
    )


def _virtual_packages(
    file: FlavorFile, parent: Flavor | None
) -> tuple[Path | None, str | None, bool]:
    """(spec file, with-cuda, without-cuda): the flavor's own setting — a `virtual-packages`,
    `with-cuda` or `without-cuda` key, else its folder's virtual-packages.yml — replaces
    the parent's as a whole (one mode, as on conda-lock's command line); else inherited."""
    values = file.values
    implicit = file.directory / VIRTUAL_PACKAGES_FILE
    if "virtual-packages" in values:
        relative = values["virtual-packages"]
        path = file.directory / relative
        if not path.is_file():
            raise SpecError(
                f"{file.path}: `virtual-packages = {relative!r}` names {path}, which is not a "
                "file; expected a virtual-package spec (conda-lock's --virtual-package-spec "
                f"format), relative to {file.directory}."
            )
        return path, None, False
    given = [key for key in ("with-cuda", "without-cuda") if key in values]
    if given and implicit.is_file():
        raise SpecError(
            f"{file.path}: `{given[0]}` and {implicit} exclude each other (a flavor's "
            f"{VIRTUAL_PACKAGES_FILE} is its virtual-package spec, and lockdock would ignore "
            "one of the two): remove the key or the file."
        )
    if given:
        return None, values.get("with-cuda"), bool(values.get("without-cuda", False))
    if implicit.is_file():
        return implicit, None, False
    if parent is None:
        return None, None, False
    return parent.virtual_packages_file, parent.with_cuda, parent.without_cuda
