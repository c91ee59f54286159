"""``lockdock devcontainer FLAVOR``: a devcontainer.json running the flavor's published image,
pinned by digest (from ``images.lock.json``), with the devices its accelerator needs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lockdock.accelerators import Accelerator
from lockdock.errors import UsageError
from lockdock.facts import ENV_PREFIX
from lockdock.fsutil import write_text_atomic
from lockdock.textio import read_text
from lockdock.workspace import Workspace, published_records

DEVCONTAINER_PATH = Path(".devcontainer") / "devcontainer.json"


def published_record(
    images_lock: Mapping[str, Any] | None, flavor: str, repository: str | None, source: Path
) -> Mapping[str, Any]:
    """The images.lock.json record of ``flavor`` (in ``repository`` when given)."""
    records = published_records(images_lock, flavor, repository)
    if not records:
        where = f" in {repository}" if repository else ""
        raise UsageError(
            f"{source} records no published image of flavor {flavor!r}{where}: run "
            f"`lockdock publish {flavor} --registry REGISTRY/NAME` first."
        )
    if len(records) > 1:
        names = ", ".join(str(r.get("repository")) for r in records)
        raise UsageError(
            f"Flavor {flavor!r} is published to several repositories ({names}): choose one "
            "with --repository."
        )
    return records[0]


def devcontainer_text(record: Mapping[str, Any], accelerator: Accelerator) -> str:
    """A ready devcontainer.json (plain JSON) running the pinned, published image, with the
    devices the flavor's accelerator needs (``Accelerator.devcontainer``)."""
    flavor = str(record["flavor"])
    config: dict[str, object] = {
        "name": f"lockdock {flavor}",
        "image": str(record["reference"]),
        "remoteUser": "lockdock",
        "containerEnv": {"CONDA_DEFAULT_ENV": "lockdock"},
        "remoteEnv": {"PATH": f"{ENV_PREFIX}/bin:${{containerEnv:PATH}}"},
        "customizations": {
            "vscode": {
                "extensions": ["ms-python.python", "ms-toolsai.jupyter"],
                "settings": {"python.defaultInterpreterPath": f"{ENV_PREFIX}/bin/python"},
            }
        },
    }
    config.update(accelerator.devcontainer())
    return json.dumps(config, indent=2) + "\n"


def write_devcontainer(
    root: Path,
    flavor: str,
    *,
    repository: str | None = None,
    output: Path | None = None,
    force: bool = False,
) -> Path:
    """``lockdock devcontainer FLAVOR``: write .devcontainer/devcontainer.json atomically.
    An ``output`` that is a directory or one of the project's inputs is refused before
    anything is read (``render.check_output``)."""
    from lockdock.accelerators import accelerator
    from lockdock.render import check_output
    from lockdock.spec import load_project

    project = load_project(root)
    if output is not None:
        check_output(output, project)
    workspace = Workspace(root)
    record = published_record(workspace.read_images_lock(), flavor, repository,
                              workspace.images_lock_path)
    chosen = project.one(flavor)
    text = devcontainer_text(record, accelerator(chosen.accelerator))
    out = output or root / DEVCONTAINER_PATH
    if out.exists() and not force and read_text(out) != text:
        raise UsageError(
            f"{out} already exists and differs: pass --force to replace it, or keep it and "
            f"run `lockdock pin {record['repository']}` to pin its image."
        )
    write_text_atomic(out, text)
    return out
