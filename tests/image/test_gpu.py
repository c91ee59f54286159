"""GPU smoke gate (skipped with the reason when PyTorch sees no GPU; the CUDA image's
import, build and version checks live in test_environment.py and run regardless).

The determinism and gradient gates also run on ``cuda`` through their ``device`` parameter.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import gatekit
import pytest
import torch

pytestmark = pytest.mark.skipif(
    not gatekit.cuda_usable(),
    reason="no CUDA device visible to PyTorch (CPU-only build or no GPU passed in)",
)


def test_device_visible(observe: Any) -> None:
    count = torch.cuda.device_count()
    names = [torch.cuda.get_device_name(i) for i in range(count)]
    observe(
        "CUDA devices",
        expected=">= 1 device",
        observed=f"{count}: {', '.join(names)}",
        ok=count >= 1,
    )


def test_compute_capability_in_arch_list(observe: Any) -> None:
    archs = torch.cuda.get_arch_list()
    for index in range(torch.cuda.device_count()):
        capability = torch.cuda.get_device_capability(index)
        observe(
            f"device {index} compute capability covered by the build",
            expected=f"sm_{capability[0]}{capability[1]} in {' '.join(archs)}",
            observed=f"{capability[0]}.{capability[1]}",
            ok=gatekit.arch_covers(capability, archs),
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
        ok=gatekit.cudnn_versions_match(compiled, runtime),
    )


def test_float64_matmul_matches_cpu(observe: Any) -> None:
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(256, 256, dtype=torch.float64, generator=generator)
    b = torch.randn(256, 256, dtype=torch.float64, generator=generator)
    error = gatekit.relative_error(a.cuda() @ b.cuda(), a @ b)
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
        error = gatekit.relative_error(a.cuda() @ b.cuda(), a.double() @ b.double())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    observe(
        "float32 matmul GPU (TF32 off) vs CPU float64",
        expected=f"relative error < {gatekit.FP32_MATMUL_TOLERANCE:g}",
        observed=f"{error:.2e}",
        ok=gatekit.fp32_matmul_ok(error),
    )


def test_bf16_autocast(observe: Any) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name(0)} does not support bfloat16")
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(128, 128, generator=generator)
    b = torch.randn(128, 128, generator=generator)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        product = a.cuda() @ b.cuda()
    error = gatekit.relative_error(product, a.double() @ b.double())
    observe(
        "bf16 autocast matmul",
        expected="dtype bfloat16, relative error < 2e-2",
        observed=f"{product.dtype}, {error:.2e}",
        ok=product.dtype == torch.bfloat16 and error < 2e-2,
    )


def test_nccl_initializes_on_one_rank(observe: Any) -> None:
    """NCCL loads and runs a collective on one GPU. With one rank all_reduce is the identity:
    this proves the library and its init, not communication (test_nccl_two_ranks does)."""
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
        "NCCL init + single-rank all_reduce (identity; not a communication check)",
        expected=[0.0, 1.0, 2.0, 3.0],
        observed=observed,
        ok=observed == [0.0, 1.0, 2.0, 3.0],
    )


def _nccl_rank(rank: int, world: int, store_path: str, results: str) -> None:
    import json

    import torch.distributed as dist

    store = dist.FileStore(store_path, world)
    dist.init_process_group(
        "nccl", store=store, rank=rank, world_size=world, device_id=torch.device("cuda", rank)
    )
    try:
        tensor = torch.tensor(_rank_input(rank), dtype=torch.float32, device=f"cuda:{rank}")
        dist.all_reduce(tensor)
        torch.cuda.synchronize(rank)
        with open(os.path.join(results, f"rank{rank}.json"), "w", encoding="utf-8") as handle:
            json.dump(tensor.cpu().tolist(), handle)
    finally:
        dist.destroy_process_group()


def _rank_input(rank: int) -> list[float]:
    return [float(rank + 1) * (i + 1) for i in range(4)]  # rank 0: 1 2 3 4; rank 1: 2 4 6 8


def test_nccl_two_ranks_all_reduce(observe: Any) -> None:
    """all_reduce(SUM) across two GPUs in two processes: each rank must end with the sum,
    which differs from every rank's own input (gatekit.all_reduce_sum_ok)."""
    import json

    import torch.multiprocessing as mp

    if torch.cuda.device_count() < 2:
        pytest.skip(f"{torch.cuda.device_count()} CUDA device(s): two ranks need two GPUs")
    world = 2
    with tempfile.TemporaryDirectory() as scratch:
        mp.spawn(_nccl_rank, args=(world, os.path.join(scratch, "store"), scratch), nprocs=world)
        results = []
        for rank in range(world):
            with open(os.path.join(scratch, f"rank{rank}.json"), encoding="utf-8") as handle:
                results.append(json.load(handle))
    inputs = [_rank_input(rank) for rank in range(world)]
    observe(
        "NCCL all_reduce(SUM) over 2 ranks",
        expected=f"every rank {[sum(c) for c in zip(*inputs, strict=True)]}, unlike its input",
        observed=results,
        ok=all(gatekit.all_reduce_sum_ok(inputs, result) for result in results),
    )
