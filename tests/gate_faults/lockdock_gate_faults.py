"""Test-only pytest plugin: replace one gate component with a broken one, on the host only.

Loaded with ``-p lockdock_gate_faults`` (this folder on ``PYTHONPATH``) by
tests/e2e/test_gates_faults.py, with ``LOCKDOCK_GATES_FAULT`` naming the fault. It is never
mounted into an image; the payload itself knows no fault names: it only offers the
``pytest_lockdock_gates_components`` hook (tests/image/conftest.py).

Each fault must make exactly its gate's targeted tests fail; the host test's ``FAULT_CASES``
names them and the README's "check → fault" table maps every payload check to its fault.
Faults in the training process (``TRAINING_FAULTS``) run ``train_faulty.py``, which reads
the same variable. Faults of pure data (a wrong Python version, a CUDA expectation on a CPU
torch) need no code here: the host test changes the expectations instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

FAULT_VARIABLE = "LOCKDOCK_GATES_FAULT"
HERE = Path(__file__).resolve().parent
#: Faults injected into the fresh-interpreter training run (see train_faulty.py).
TRAINING_FAULTS = (
    "nondeterministic-op",
    "buffer-drift",
    "loss-drift-1e-7",
    "seed-ignored",
    "deterministic-mode-off-in-training",
)


def _components() -> dict[str, Callable[[], dict[str, Any]]]:
    return {
        "wrong-backward": lambda: {"custom_function": _scaled_tanh_backward(lost_derivative=True)},
        "backward-1pct-off": lambda: {"custom_function": _scaled_tanh_backward(factor=1.01)},
        "wrong-double-backward": lambda: {"custom_function": _scaled_tanh_detached_backward()},
        "module-gradient-1pct-off": lambda: {"reference_module": _reference_module_off()},
        "detached-parameter": lambda: {"health_model": _detached_parameter_model()},
        "bypassed-submodule": lambda: {"health_model": _bypassed_submodule_model()},
        "dead-parameter": lambda: {"health_model": _dead_parameter_model()},
        "overconfident-init": lambda: {"health_model": _overconfident_model()},
        "ascending-optimizer": lambda: {"health_optimizer": _ascending_optimizer},
        "deterministic-switch-ignored": lambda: {"deterministic_mode": lambda mode: None},
        "cuda-torch-in-cpu-image": lambda: {"torch_build": lambda: ("12.8", True)},
    }


FAULTS = (*TRAINING_FAULTS, *_components())


def pytest_lockdock_gates_components(components: Any) -> None:
    fault = os.environ.get(FAULT_VARIABLE, "")
    if fault in TRAINING_FAULTS:
        components.training_command = [sys.executable, str(HERE / "train_faulty.py")]
    elif fault in _components():
        for name, value in _components()[fault]().items():
            setattr(components, name, value)
    elif fault:
        raise pytest.UsageError(f"unknown {FAULT_VARIABLE}={fault!r}; known: {', '.join(FAULTS)}")


# --- gradient faults ---------------------------------------------------------------------


def _scaled_tanh_backward(*, lost_derivative: bool = False, factor: float = 1.0) -> type:
    """ScaledTanh whose input gradient forgets the tanh derivative or is ``factor`` off."""
    import gatekit
    import torch

    class FaultyBackwardScaledTanh(gatekit.ScaledTanh):
        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x, scale = ctx.saved_tensors
            t = torch.tanh(x)
            derivative = 1 if lost_derivative else (1 - t * t)
            return grad * scale * derivative * factor, (grad * t).sum().reshape(scale.shape)

    return FaultyBackwardScaledTanh


def _scaled_tanh_detached_backward() -> type:
    """First derivative right, second wrong: the backward's tanh is cut from the graph."""
    import gatekit
    import torch

    class DetachedBackwardScaledTanh(gatekit.ScaledTanh):
        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x, scale = ctx.saved_tensors
            t = torch.tanh(x).detach()
            return grad * scale * (1 - t * t), (grad * t).sum().reshape(scale.shape)

    return DetachedBackwardScaledTanh


def _reference_module_off() -> type:
    """ReferenceMLP whose tanh has a backward 1% off (functorch-style autograd.Function)."""
    import gatekit
    import torch

    class OffTanh(torch.autograd.Function):
        @staticmethod
        def forward(x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x)

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: torch.Tensor) -> None:
            ctx.save_for_backward(output)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            (y,) = ctx.saved_tensors
            return grad * (1 - y * y) * 1.01

    class OffGradientReferenceMLP(gatekit.ReferenceMLP):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = OffTanh.apply(self.first(x))
            return self.second(hidden)

    return OffGradientReferenceMLP


# --- training-health faults --------------------------------------------------------------


def _detached_parameter_model() -> type:
    import gatekit
    import torch
    import torch.nn.functional as F

    class DetachedOutputWeightMLP(gatekit.HealthMLP):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = torch.tanh(self.hidden(x))
            return F.linear(hidden, self.out.weight.detach(), self.out.bias)

    return DetachedOutputWeightMLP


def _bypassed_submodule_model() -> type:
    """A registered block the forward path skips (a residual branch wired past): its
    parameters are trainable and never get a gradient."""
    import gatekit
    import torch
    from torch import nn

    class BypassedBlockMLP(gatekit.HealthMLP):
        def __init__(self, features: int, classes: int, hidden: int = 32) -> None:
            super().__init__(features, classes, hidden)
            self.block = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = torch.tanh(self.hidden(x))  # self.block(hidden) was meant to be here
            return self.out(hidden)

    return BypassedBlockMLP


def _dead_parameter_model() -> type:
    """A parameter reached only through a zero factor: it has a gradient, all zeros."""
    import gatekit
    import torch
    from torch import nn

    class DeadTemperatureMLP(gatekit.HealthMLP):
        def __init__(self, features: int, classes: int, hidden: int = 32) -> None:
            super().__init__(features, classes, hidden)
            self.temperature = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 0.0 * self.temperature

    return DeadTemperatureMLP


def _overconfident_model() -> type:
    """Logits shifted by a constant at initialization: the first loss is far from ln k."""
    import gatekit
    import torch

    class OverconfidentMLP(gatekit.HealthMLP):
        def __init__(self, features: int, classes: int, hidden: int = 32) -> None:
            super().__init__(features, classes, hidden)
            with torch.no_grad():
                self.out.bias.copy_(torch.tensor([4.0] + [0.0] * (classes - 1)))

    return OverconfidentMLP


def _ascending_optimizer(params: Iterable[Any]) -> Any:
    """SGD with the sign flipped: every step climbs the loss."""
    import torch

    return torch.optim.SGD(params, lr=0.5, maximize=True)
