"""The gate payload's shared pieces: models, the custom autograd Function, hashing, devices.

This directory runs inside an image with only the image's Python, PyTorch and pytest (numpy
is used when present). It never imports lockdock, never reaches the network and writes only
to the results directory it is given and to the temp directory.
"""

from __future__ import annotations

import hashlib
import re
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PAYLOAD_DIR = Path(__file__).resolve().parent
TRAIN_SCRIPT = PAYLOAD_DIR / "train.py"

#: Environment variables the host sets from the image's labels and lock (see conftest.py).
EXPECT_PYTHON = "LOCKDOCK_EXPECT_PYTHON"
EXPECT_TORCH = "LOCKDOCK_EXPECT_TORCH"
EXPECT_CUDA = "LOCKDOCK_EXPECT_CUDA"
EXPECT_FLAVOR = "LOCKDOCK_EXPECT_FLAVOR"
#: The flavor's accelerator kind and its runtime's version (lockdock.accelerators), e.g.
#: ``cuda`` + LOCKDOCK_EXPECT_CUDA, ``rocm`` + LOCKDOCK_EXPECT_ROCM; a flavor's name means
#: nothing to the payload.
EXPECT_ACCELERATOR = "LOCKDOCK_EXPECT_ACCELERATOR"
EXPECT_ROCM = "LOCKDOCK_EXPECT_ROCM"
EXPECT_PREFIX = "LOCKDOCK_EXPECT_PREFIX"
RESULTS_DIR = "LOCKDOCK_GATES_RESULTS"


def cuda_usable() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes (bitwise identity, not closeness)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}|{tuple(tensor.shape)}|".encode())
    if flat.numel():
        digest.update(bytes(flat.view(torch.uint8).tolist()))
    return digest.hexdigest()


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    return {name: tensor_sha256(value) for name, value in sorted(state.items())}


def combined_sha256(per_tensor: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(per_tensor.items()):
        digest.update(f"{name}={value}\n".encode())
    return digest.hexdigest()


def floats_sha256(values: Iterable[float]) -> str:
    return hashlib.sha256(b"".join(struct.pack("<d", v) for v in values)).hexdigest()


# --- models -------------------------------------------------------------------------------


class TinyConvNet(nn.Module):
    """The determinism run's model: conv + linear with dropout on (8x8 single-channel input)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(p=0.25)
        self.fc = nn.Linear(8 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(self.dropout(torch.flatten(h, 1)))


class HealthMLP(nn.Module):
    """The training-health model: a two-layer MLP classifier."""

    def __init__(self, features: int, classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.hidden = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


class ReferenceMLP(nn.Module):
    """The module whose parameter gradients are compared with central differences."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.second = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


class ScaledTanh(torch.autograd.Function):
    """y = scale * tanh(x); the backward is written by hand in differentiable ops."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, scale)
        return scale * torch.tanh(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Recompute tanh from the saved input: a tensor made inside forward is not part of
        # the graph, so saving tanh(x) would make the double backward silently wrong.
        x, scale = ctx.saved_tensors
        t = torch.tanh(x)
        grad_x = grad * scale * (1 - t * t)
        grad_scale = (grad * t).sum().reshape(scale.shape)
        return grad_x, grad_scale


def health_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The training-health check's optimizer: plain SGD, a step size the toy task tolerates."""
    return torch.optim.SGD(params, lr=0.5)


def torch_build() -> tuple[str | None, bool]:
    """What this PyTorch was built with: (``torch.version.cuda``, CUDA backend built)."""
    return torch.version.cuda, torch.backends.cuda.is_built()


# --- decisions (pure: the host injects faults into these without a GPU) --------------------


def build_matches_flavor(wants_cuda: bool, torch_cuda: str | None, cuda_built: bool) -> bool:
    """A CUDA image must carry a CUDA build of PyTorch, and a CPU image no CUDA build."""
    if wants_cuda:
        return torch_cuda is not None and cuda_built
    return torch_cuda is None and not cuda_built


def arch_covers(capability: tuple[int, int], arch_list: Iterable[str]) -> bool:
    """Whether a build for ``arch_list`` runs on a device of ``capability``: a cubin for the
    same major and an equal or lower minor (``sm_80`` runs on 8.6), or PTX (``compute_XY``)
    for an equal or lower capability, which the driver compiles."""
    major, minor = capability
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+?)(\d)[a-z]?", arch)
        if not match:
            continue
        kind, arch_major, arch_minor = match[1], int(match[2]), int(match[3])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True
    return False


def cudnn_versions_match(compiled: Iterable[int], runtime: Iterable[int]) -> bool:
    """cuDNN loaded at run time is the one PyTorch was compiled against (major.minor.patch)."""
    return tuple(compiled) == tuple(runtime)


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double().cpu() - reference.double()).norm() / reference.double().norm())


#: float32 matmul with TF32 off against float64 (256x256): TF32 rounding errs ~3e-4 here.
FP32_MATMUL_TOLERANCE = 1e-4


def fp32_matmul_ok(error: float) -> bool:
    return error < FP32_MATMUL_TOLERANCE


def all_reduce_sum_ok(inputs: list[list[float]], result: list[float]) -> bool:
    """A rank's all_reduce(SUM) result is the element-wise sum of every rank's input and,
    with two or more ranks holding different inputs, equals none of them (the identity a
    single rank returns proves nothing about communication)."""
    expected = [sum(column) for column in zip(*inputs, strict=True)]
    return (
        len(inputs) >= 2 and result == expected and all(result != list(values) for values in inputs)
    )


@dataclass
class Components:
    """What the gates exercise. Defaults are the real thing; the host's fault-injection
    plugin (tests/gate_faults, never shipped into images) replaces one entry through the
    ``pytest_lockdock_gates_components`` hook to prove that its gate fails."""

    #: argv prefix of a fresh-interpreter training run (``train.py``'s options follow).
    training_command: list[str] = field(default_factory=lambda: [sys.executable, str(TRAIN_SCRIPT)])
    custom_function: type[torch.autograd.Function] = ScaledTanh
    health_model: Callable[[int, int], nn.Module] = HealthMLP
    reference_module: Callable[[], nn.Module] = ReferenceMLP
    health_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] = health_optimizer
    #: Turns PyTorch's deterministic mode on/off (the nondeterministic-op control uses it).
    deterministic_mode: Callable[[bool], None] = torch.use_deterministic_algorithms
    torch_build: Callable[[], tuple[str | None, bool]] = torch_build
