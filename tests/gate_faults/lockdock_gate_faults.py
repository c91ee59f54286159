"""Test-only pytest plugin: replace one gate component with a broken one, on the host only.

Loaded with ``-p lockdock_gate_faults`` (this folder on ``PYTHONPATH``) by
tests/e2e/test_gates_faults.py, with ``LOCKDOCK_GATES_FAULT`` naming the fault. It is never
mounted into an image; the payload itself knows no fault names: it only offers the
``pytest_lockdock_gates_components`` hook (tests/image/conftest.py).

Faults (each must make exactly its gate fail):

- ``nondeterministic-op``: the training step's linear layer accumulates its weight gradient
  in an order drawn from OS entropy, as atomicAdd-based CUDA backward kernels do.
- ``wrong-backward``: the custom ``autograd.Function`` forgets the tanh derivative.
- ``detached-parameter``: the health model uses its output weight through ``.detach()``.

(The fourth fault, a "CUDA" image whose torch has no CUDA, needs no code: the host test
expects flavor ``cuda`` of the CPU-only torch.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

FAULT_VARIABLE = "LOCKDOCK_GATES_FAULT"
FAULTS = ("nondeterministic-op", "wrong-backward", "detached-parameter")
HERE = Path(__file__).resolve().parent


def pytest_lockdock_gates_components(components: Any) -> None:
    fault = os.environ.get(FAULT_VARIABLE, "")
    if fault == "nondeterministic-op":
        components.training_command = [sys.executable, str(HERE / "train_faulty.py")]
    elif fault == "wrong-backward":
        components.custom_function = _wrong_backward_function()
    elif fault == "detached-parameter":
        components.health_model = _detached_parameter_model()
    elif fault:
        raise pytest.UsageError(f"unknown {FAULT_VARIABLE}={fault!r}; known: {', '.join(FAULTS)}")


def _wrong_backward_function() -> type:
    import gatekit
    import torch

    class WrongBackwardScaledTanh(gatekit.ScaledTanh):
        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x, scale = ctx.saved_tensors
            t = torch.tanh(x)
            return grad * scale, (grad * t).sum().reshape(scale.shape)  # lost (1 - tanh²)

    return WrongBackwardScaledTanh


def _detached_parameter_model() -> type:
    import gatekit
    import torch
    import torch.nn.functional as F

    class DetachedOutputWeightMLP(gatekit.HealthMLP):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = torch.tanh(self.hidden(x))
            return F.linear(hidden, self.out.weight.detach(), self.out.bias)

    return DetachedOutputWeightMLP
