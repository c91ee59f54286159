"""The project model: which flavors exist and which input files define each one's lock.

A lockdock project is a directory holding ``environment.yml`` and ``images/``. Every
folder of ``images/`` except ``base/`` is a flavor; each has a ``Dockerfile`` and may
add an overlay ``environment.yml`` (merged after the top-level one, as conda-lock merges
several ``-f`` files) and a ``virtual-packages.yml`` (conda-lock's
``--virtual-package-spec`` format). The default flavor ``cpu`` is locked into the
top-level ``conda-lock.yml``; every other flavor into ``images/<flavor>/conda-lock.yml``.

Pure: reads the directory tree, never writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockdock.errors import SpecError, UsageError

DEFAULT_FLAVOR = "cpu"
BASE_DIR_NAME = "base"
ENVIRONMENT_FILE = "environment.yml"
LOCK_FILE = "conda-lock.yml"
VIRTUAL_PACKAGES_FILE = "virtual-packages.yml"


@dataclass(frozen=True)
class Flavor:
    name: str
    directory: Path
    dockerfile: Path
    #: The environment files conda-lock would be given, in ``-f`` order.
    environment_files: tuple[Path, ...]
    virtual_packages_file: Path | None
    lock_path: Path


@dataclass(frozen=True)
class Project:
    root: Path
    environment_file: Path
    flavors: dict[str, Flavor]

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def base_dir(self) -> Path:
        return self.images_dir / BASE_DIR_NAME

    @property
    def state_dir(self) -> Path:
        """Where lockdock keeps its working state (store, reports, build outputs)."""
        return self.root / ".lockdock"

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


def flavor_from_directory(root: Path, directory: Path) -> Flavor:
    name = directory.name
    dockerfile = directory / "Dockerfile"
    if not dockerfile.is_file():
        raise SpecError(
            f"Flavor folder {directory} has no Dockerfile: every folder of images/ except "
            "base/ is a flavor and needs one (remove the folder if it is not a flavor)."
        )
    overlay = directory / ENVIRONMENT_FILE
    env_files: Sequence[Path] = (root / ENVIRONMENT_FILE,)
    if overlay.is_file():
        env_files = (*env_files, overlay)
    vpkgs = directory / VIRTUAL_PACKAGES_FILE
    lock_path = root / LOCK_FILE if name == DEFAULT_FLAVOR else directory / LOCK_FILE
    return Flavor(
        name=name,
        directory=directory,
        dockerfile=dockerfile,
        environment_files=tuple(env_files),
        virtual_packages_file=vpkgs if vpkgs.is_file() else None,
        lock_path=lock_path,
    )


def load_project(root: Path | str = ".") -> Project:
    """Discover the project rooted at ``root`` (the current directory for the CLI)."""
    root = Path(root).resolve()
    env_file = root / ENVIRONMENT_FILE
    if not env_file.is_file():
        raise SpecError(
            f"No {ENVIRONMENT_FILE} in {root}: lockdock commands run in a project directory "
            "holding environment.yml and images/<flavor>/Dockerfile."
        )
    images = root / "images"
    flavors: dict[str, Flavor] = {}
    if images.is_dir():
        for directory in sorted(p for p in images.iterdir() if p.is_dir()):
            if directory.name == BASE_DIR_NAME or directory.name.startswith("."):
                continue
            flavors[directory.name] = flavor_from_directory(root, directory)
    return Project(root=root, environment_file=env_file, flavors=flavors)
