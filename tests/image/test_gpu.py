"""GPU smoke gate (skipped with the reason when PyTorch sees no GPU; the CUDA image's
import, build and version checks live in test_environment.py and run regardless).

The determinism and gradient gates also run on ``cuda`` through their ``device`` parameter.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import gatekit
import pytest
import torch

pytestmark = pytest.mark.skipif(
    not gatekit.cuda_usable(),
    reason="no CUDA device visible to PyTorch (CPU-only build or no GPU passed in)",
)


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double().cpu() - reference.double()).norm() / reference.double().norm())


def test_device_visible(observe: Any) -> None:
    count = torch.cuda.device_count()
    names = [torch.cuda.get_device_name(i) for i in range(count)]
    observe(
        "CUDA devices",
        expected=">= 1 device",
        observed=f"{count}: {', '.join(names)}",
        ok=count >= 1,
    )


def arch_covers(capability: tuple[int, int], arch_list: list[str]) -> bool:
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


def test_compute_capability_in_arch_list(observe: Any) -> None:
    archs = torch.cuda.get_arch_list()
    for index in range(torch.cuda.device_count()):
        capability = torch.cuda.get_device_capability(index)
        observe(
            f"device {index} compute capability covered by the build",
            expected=f"sm_{capability[0]}{capability[1]} in {' '.join(archs)}",
            observed=f"{capability[0]}.{capability[1]}",
            ok=arch_covers(capability, archs),
        )


def test_cudnn_enabled_and_runtime_matches_compiled(observe: Any) -> None:
    available = torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled
    observe("cuDNN available and enabled", expected="True", observed=str(available), ok=available)
    from torch._C import _cudnn

    compiled, runtime = _cudnn.getCompileVersion(), _cudnn.getRuntimeVersion()
    observe(
        "cuDNN runtime version equals compiled version",
        expected=".".join(map(str, compiled)),
        observed=".".join(map(str, runtime)),
        ok=tuple(compiled) == tuple(runtime),
    )


def test_float64_matmul_matches_cpu(observe: Any) -> None:
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(256, 256, dtype=torch.float64, generator=generator)
    b = torch.randn(256, 256, dtype=torch.float64, generator=generator)
    error = _relative_error(a.cuda() @ b.cuda(), a @ b)
    observe(
        "float64 matmul GPU vs CPU",
        expected="relative error < 1e-10",
        observed=f"{error:.2e}",
        ok=error < 1e-10,
    )


def test_float32_matmul_without_tf32_matches_cpu(observe: Any) -> None:
    generator = torch.Generator().manual_seed(4)
    a = torch.randn(256, 256, generator=generator)
    b = torch.randn(256, 256, generator=generator)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        error = _relative_error(a.cuda() @ b.cuda(), a.double() @ b.double())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    observe(
        "float32 matmul GPU (TF32 off) vs CPU float64",
        expected="relative error < 1e-4",
        observed=f"{error:.2e}",
        ok=error < 1e-4,
    )


def test_bf16_autocast(observe: Any) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name(0)} does not support bfloat16")
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(128, 128, generator=generator)
    b = torch.randn(128, 128, generator=generator)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        product = a.cuda() @ b.cuda()
    error = _relative_error(product, a.double() @ b.double())
    observe(
        "bf16 autocast matmul",
        expected="dtype bfloat16, relative error < 2e-2",
        observed=f"{product.dtype}, {error:.2e}",
        ok=product.dtype == torch.bfloat16 and error < 2e-2,
    )


def test_nccl_single_rank_all_reduce(observe: Any) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_nccl_available()):
        observe("NCCL available", expected="True", observed="False", ok=False)
    with tempfile.TemporaryDirectory() as scratch:
        store = dist.FileStore(os.path.join(scratch, "store"), 1)
        dist.init_process_group(
            "nccl", store=store, rank=0, world_size=1, device_id=torch.device("cuda", 0)
        )
        try:
            tensor = torch.arange(4, dtype=torch.float32, device="cuda")
            dist.all_reduce(tensor)
            torch.cuda.synchronize()
            observed = tensor.cpu().tolist()
        finally:
            dist.destroy_process_group()
    observe(
        "single-rank NCCL all_reduce",
        expected=[0.0, 1.0, 2.0, 3.0],
        observed=observed,
        ok=observed == [0.0, 1.0, 2.0, 3.0],
    )
