"""``lockdock devcontainer`` opened by the real Dev Containers CLI (``@devcontainers/cli``, as
``ci/devtools`` installs it), against the local engine.

The shared demo image is gated and published to the local registry (tests/fixtures/images.py,
``published_demo``); ``lockdock devcontainer cpu`` writes .devcontainer/devcontainer.json in a
workspace; ``devcontainer up`` starts it (pulling the digest-pinned reference from
127.0.0.1:5000) and ``devcontainer exec`` runs the locked torch as ``lockdock`` in the mounted,
writable workspace. A devcontainer.json the CLI rejects is a lockdock bug: every generated
variant goes through the CLI's own parser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockdock.accelerators import KINDS
from lockdock.devcontainer import devcontainer_text
from lockdock.testing.demo import write_demo_project
from lockdock.workspace import IMAGES_LOCK, Workspace
from tests.fixtures.images import PublishedDemo
from tests.helpers import lockdock_process as lockdock

PREFIX = "/opt/conda/envs/lockdock"
DIGEST_PINNED = re.compile(r"^[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$")


def cli(devcontainer: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(devcontainer), *args], capture_output=True, text=True,
                          check=False, timeout=timeout)




def docker_out(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def last_json(output: str) -> dict[str, object]:
    """The CLI's result: the last line of its stdout that is a JSON object."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise AssertionError(f"no JSON result in:\n{output}")


def record(flavor: str) -> dict[str, str]:
    digest = "sha256:" + "ab" * 32
    return {"flavor": flavor, "repository": "127.0.0.1:5000/demo",
            "reference": f"127.0.0.1:5000/demo:{flavor}-0123456789ab@{digest}"}


@pytest.mark.parametrize("flavor", sorted(KINDS))  # a flavor of each accelerator kind
def test_every_generated_devcontainer_json_is_accepted_by_the_cli(
    devcontainer_cli: Path, tmp_path: Path, flavor: str
) -> None:
    written = devcontainer_text(record(flavor), KINDS[flavor])
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer/devcontainer.json").write_text(written)
    proc = cli(devcontainer_cli, "read-configuration", "--workspace-folder", str(tmp_path))
    assert proc.returncode == 0, f"the CLI rejects lockdock's devcontainer.json:\n{proc.stderr}"
    read = last_json(proc.stdout)["configuration"]
    assert isinstance(read, dict)
    for key, value in json.loads(written).items():
        assert read[key] == value, key  # nothing the CLI dropped or reinterpreted


@pytest.mark.parametrize(("command", "broken"), [
    ("read-configuration", "not json at all\n"),  # not JSON(C): the parser rejects it
    ("up", '{"name": "x", "remoteUser": "lockdock"}'),  # no image: rejected before any docker
])
def test_the_cli_check_can_fail(devcontainer_cli: Path, tmp_path: Path, command: str,
                                broken: str) -> None:
    """The controls for the checks here: the CLI does reject a broken devcontainer.json."""
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer/devcontainer.json").write_text(broken)
    proc = cli(devcontainer_cli, command, "--workspace-folder", str(tmp_path))
    assert proc.returncode != 0, proc.stdout


def test_devcontainer_for_a_flavor_never_published_names_it(tmp_path: Path) -> None:
    write_demo_project(tmp_path)
    Workspace(tmp_path).images_lock_path.write_text(json.dumps(
        {"version": 1, "images": []}) + "\n")
    proc = lockdock(tmp_path, "devcontainer", "gpu-large")
    assert proc.returncode == 2, proc.stderr  # UsageError (README "Exit codes")
    assert "'gpu-large'" in proc.stderr and "lockdock publish gpu-large" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / ".devcontainer").exists()


@pytest.fixture
def workspace(published_demo: PublishedDemo, tmp_path: Path) -> Iterator[Path]:
    """A project folder that records the published image, owned by uid 1000 as a developer's
    checkout is (the CLI maps the container user to the host user; run as root it keeps 1000)."""
    ws, project = tmp_path / "ws", published_demo.image.root
    ws.mkdir()
    for name in ("environment.yml", "conda-lock.yml", IMAGES_LOCK):
        shutil.copy2(project / name, ws / name)
    shutil.copytree(project / "images", ws / "images")
    (ws / "notebook.py").write_text("print('from the host')\n")
    yield ws
    listed = subprocess.run(["docker", "ps", "-aq", "--filter",
                             f"label=devcontainer.local_folder={ws}"],
                            capture_output=True, text=True, check=False)
    for container in listed.stdout.split():
        image = subprocess.run(["docker", "inspect", "-f", "{{.Config.Image}}", container],
                               capture_output=True, text=True, check=False).stdout.strip()
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        if image.startswith("vsc-"):  # the CLI's uid-mapping image on top of ours
            subprocess.run(["docker", "image", "rm", image], capture_output=True, check=False)


@pytest.mark.engine
@pytest.mark.network
def test_devcontainer_up_and_exec_run_the_locked_torch_as_lockdock(
    devcontainer_cli: Path, published_demo: PublishedDemo, workspace: Path
) -> None:
    wrote = lockdock(workspace, "devcontainer", "cpu")
    assert wrote.returncode == 0, wrote.stderr
    config = json.loads((workspace / ".devcontainer/devcontainer.json").read_text())
    assert config["image"] == published_demo.reference and DIGEST_PINNED.match(config["image"])
    for path in [workspace, *workspace.rglob("*")]:
        os.chown(path, 1000, 1000)

    up = cli(devcontainer_cli, "up", "--workspace-folder", str(workspace))
    result = last_json(up.stdout)
    print(f"\n--- devcontainer up (tail) ---\n{up.stdout[-1500:]}")
    assert up.returncode == 0 and result["outcome"] == "success", up.stderr[-3000:]
    assert result["remoteUser"] == "lockdock"
    remote = str(result["remoteWorkspaceFolder"])
    image = docker_out("inspect", "-f", "{{.Config.Image}}", str(result["containerId"]))
    # The container runs the pinned image the CLI pulled, or the CLI's uid-mapping image on it
    published = docker_out("image", "inspect", "-f", "{{json .RootFS.Layers}}", config["image"])
    running = docker_out("image", "inspect", "-f", "{{json .RootFS.Layers}}", image)
    assert json.loads(running)[: len(json.loads(published))] == json.loads(published), image

    interpreter = config["customizations"]["vscode"]["settings"]["python.defaultInterpreterPath"]
    code = ("import os, pwd, sys, torch; "
            f"open({remote!r} + '/created-in-container', 'w').write('ok'); "
            "print('EXEC', pwd.getpwuid(os.getuid()).pw_name, os.getuid(), sys.executable, "
            "torch.__version__, os.getcwd(), open('notebook.py').read().strip())")
    run = cli(devcontainer_cli, "exec", "--workspace-folder", str(workspace),
              "python", "-c", code)
    print(f"--- devcontainer exec ---\n{run.stdout.strip()}")
    assert run.returncode == 0, run.stderr[-3000:]
    words = next(line for line in run.stdout.splitlines() if line.startswith("EXEC ")).split()
    assert words[1:7] == ["lockdock", "1000", f"{PREFIX}/bin/python", "2.13.0+cpu", remote,
                          "print('from"]
    created = workspace / "created-in-container"
    assert created.read_text() == "ok" and created.stat().st_uid == 1000
    found = cli(devcontainer_cli, "exec", "--workspace-folder", str(workspace),
                interpreter, "-c", "import sys; print('PREFIX', sys.prefix)")
    assert found.returncode == 0 and f"PREFIX {PREFIX}" in found.stdout, found.stderr
