"""PyTorch through the installer: the local torch 2.13.0 CPU wheel pinned by file:// URL +
sha256, its dependencies from PyPI, on top of the packaged CPython.

The session fixture ``torch_install`` (tests/fixtures/cpython.py) installs it twice into one
path (to compare the trees) and every test reuses the second install: torch is ~900 MB
installed and the machine is small.
"""

from __future__ import annotations

import subprocess

import pytest

from lockdock.installer import prefix as prefix_mod
from lockdock.installer.pip_install import interpreter_env
from lockdock.testing.installs import manifest_difference
from tests.fixtures.cpython import TorchInstall

pytestmark = pytest.mark.network


def test_torch_imports_and_computes_in_the_installed_interpreter(
    torch_install: TorchInstall,
) -> None:
    code = (
        "import torch; x = torch.arange(6.0).reshape(2, 3); "
        "print(torch.__version__, (x @ x.T).sum().item(), torch.__file__)"
    )
    proc = subprocess.run(
        [str(torch_install.prefix / "bin" / "python"), "-c", code],
        capture_output=True, text=True, check=True, env=interpreter_env(),
    )  # fmt: skip
    version, total, location = proc.stdout.split()
    assert version == "2.13.0+cpu"
    assert float(total) == 5.0 + 14.0 + 14.0 + 50.0  # x @ x.T = [[5, 14], [14, 50]]
    assert location.startswith(str(torch_install.prefix))


def test_torch_prefix_verifies_against_the_lock(torch_install: TorchInstall) -> None:
    contents = prefix_mod.verify_prefix(torch_install.lock, torch_install.prefix, "linux-64")
    assert contents.pip["torch"] == "2.13.0+cpu"
    assert {"sympy", "networkx", "jinja2", "markupsafe", "filelock"} <= set(contents.pip)
    assert set(contents.conda) == {"python"}


def test_two_torch_installs_into_one_path_are_byte_identical(
    torch_install: TorchInstall,
) -> None:
    assert torch_install.first == torch_install.second, manifest_difference(
        torch_install.first, torch_install.second
    )
    assert any(k.startswith("lib/python3.11/site-packages/torch/") for k in torch_install.first)
