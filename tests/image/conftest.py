"""Payload configuration: devices, expectations, the observation recorder and result files.

Results (written only when a results directory is given, by ``--results-dir`` or the
``LOCKDOCK_GATES_RESULTS`` environment variable; nothing else is written):

- ``observations.json``: one row per check — gate, check, expected, observed, ok, test id.
- ``fingerprint.json``: the numerics fingerprint — the determinism run's hashes and fixed
  reference outputs per device, so a relock can show whether numerics changed.

JUnit XML comes from pytest's own ``--junitxml``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gatekit
import pytest
import torch

SCHEMA = 1


class GateHookSpecs:
    @pytest.hookspec
    def pytest_lockdock_gates_components(self, components: gatekit.Components) -> None:
        """Called once per session with the components the gates exercise; may replace them.

        Only the host's fault-injection plugin implements it (tests/gate_faults).
        """


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(GateHookSpecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--results-dir",
        default=os.environ.get(gatekit.RESULTS_DIR) or None,
        help="write observations.json and fingerprint.json here "
        f"(default: ${gatekit.RESULTS_DIR}; nothing is written when unset)",
    )


class Recorder:
    """Session-wide store of observations and fingerprint entries."""

    def __init__(self) -> None:
        self.observations: list[dict[str, Any]] = []
        self.fingerprint: dict[str, dict[str, Any]] = {}

    def fingerprint_entry(self, device: str, key: str, value: Any) -> None:
        self.fingerprint.setdefault(device, {})[key] = value


_RECORDER_KEY = pytest.StashKey[Recorder]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RECORDER_KEY] = Recorder()


def _gate_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return module.removeprefix("test_").removesuffix(".py")


class Observe:
    """``observe(check, expected=..., observed=..., ok=...)`` records one row and fails the
    test when ``ok`` is false — the row and the verdict come from the same comparison."""

    def __init__(self, recorder: Recorder, nodeid: str) -> None:
        self._recorder = recorder
        self._nodeid = nodeid

    def __call__(self, check: str, *, expected: Any, observed: Any, ok: bool) -> None:
        self._recorder.observations.append(
            {
                "gate": _gate_of(self._nodeid),
                "test": self._nodeid,
                "check": check,
                "expected": str(expected),
                "observed": str(observed),
                "ok": bool(ok),
            }
        )
        if not ok:
            pytest.fail(f"{check}: expected {expected}, observed {observed}", pytrace=False)


@pytest.fixture
def observe(request: pytest.FixtureRequest) -> Observe:
    return Observe(request.config.stash[_RECORDER_KEY], request.node.nodeid)


@pytest.fixture
def fingerprint(request: pytest.FixtureRequest) -> Recorder:
    return request.config.stash[_RECORDER_KEY]


@pytest.fixture(scope="session")
def components(pytestconfig: pytest.Config) -> gatekit.Components:
    chosen = gatekit.Components()
    pytestconfig.hook.pytest_lockdock_gates_components(components=chosen)
    return chosen


def _device_params() -> list[Any]:
    no_gpu = pytest.mark.skipif(
        not gatekit.cuda_usable(),
        reason="no CUDA device visible to PyTorch (CPU-only build or no GPU passed in)",
    )
    return ["cpu", pytest.param("cuda", marks=no_gpu)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", _device_params())


@pytest.fixture(autouse=True)
def _restore_torch_global_state() -> Iterator[None]:
    """Gates that flip global switches (deterministic mode, TF32) cannot leak them."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def _write_json(directory: Path, name: str, document: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, directory / name)


def _environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "machine": platform.machine(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if gatekit.cuda_usable()
        else [],
    }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    results = session.config.getoption("--results-dir")
    if not results:
        return
    recorder = session.config.stash[_RECORDER_KEY]
    environment = _environment()
    directory = Path(results)
    _write_json(
        directory,
        "observations.json",
        {"schema": SCHEMA, "environment": environment, "observations": recorder.observations},
    )
    _write_json(
        directory,
        "fingerprint.json",
        {
            "schema": SCHEMA,
            "python": environment["python"],
            "torch": environment["torch"],
            "torch_cuda": environment["torch_cuda"],
            "devices": recorder.fingerprint,
        },
    )
