"""The GPU gate's decisions, fed faulty values on the host (no GPU here, none needed): a
build whose arch list misses the device, a cuDNN runtime unlike the compiled one, a float32
matmul rounded as TF32 does, an all_reduce that returned its input. Each decision is the
function the payload's test_gpu.py calls (tests/image/gatekit.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

torch: Any = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "image"))
import gatekit  # noqa: E402

H100_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


def test_arch_list_covers_the_device_or_refuses_it() -> None:
    assert gatekit.arch_covers((9, 0), H100_ARCHS)
    assert gatekit.arch_covers((8, 9), H100_ARCHS)  # sm_86 cubin runs on 8.9
    assert not gatekit.arch_covers((9, 0), [a for a in H100_ARCHS if a != "sm_90"])  # fault
    assert not gatekit.arch_covers((10, 0), H100_ARCHS)  # a newer major needs its cubin/PTX
    assert gatekit.arch_covers((10, 0), [*H100_ARCHS, "compute_90"])  # PTX the driver JITs
    assert not gatekit.arch_covers((8, 0), ["sm_86"])  # a higher minor does not run on 8.0


def test_cudnn_runtime_must_equal_compiled() -> None:
    assert gatekit.cudnn_versions_match((9, 1, 0), [9, 1, 0])
    assert not gatekit.cudnn_versions_match((9, 1, 0), (9, 0, 0))  # fault: older runtime
    assert not gatekit.cudnn_versions_match((9, 1, 0), (9, 1, 1))


def _tf32(tensor: Any) -> Any:
    """Round float32 to TF32's 10-bit mantissa (round to nearest), as tensor cores do."""
    bits = tensor.contiguous().view(torch.int32)
    rounded = (bits + 0x1000) & ~0x1FFF
    return rounded.view(torch.float32)


def test_float32_matmul_tolerance_catches_tf32() -> None:
    generator = torch.Generator().manual_seed(4)  # the payload's inputs
    a = torch.randn(256, 256, generator=generator)
    b = torch.randn(256, 256, generator=generator)
    reference = a.double() @ b.double()
    fp32 = gatekit.relative_error(a @ b, reference)
    tf32 = gatekit.relative_error(_tf32(a) @ _tf32(b), reference)
    assert gatekit.fp32_matmul_ok(fp32), fp32  # the control: real float32 passes
    assert not gatekit.fp32_matmul_ok(tf32), tf32  # fault: TF32 left on fails
    assert tf32 > 2 * gatekit.FP32_MATMUL_TOLERANCE > 100 * fp32  # a margin both ways


def test_all_reduce_must_sum_and_differ_from_every_input() -> None:
    inputs = [[1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]]
    assert gatekit.all_reduce_sum_ok(inputs, [3.0, 6.0, 9.0, 12.0])
    assert not gatekit.all_reduce_sum_ok(inputs, inputs[0])  # fault: no communication
    assert not gatekit.all_reduce_sum_ok(inputs, [2.0, 4.0, 6.0, 8.0])
    assert not gatekit.all_reduce_sum_ok(inputs[:1], inputs[0])  # one rank proves nothing


def test_torch_build_must_match_the_flavor() -> None:
    assert gatekit.build_matches_flavor(False, None, False)
    assert not gatekit.build_matches_flavor(False, "12.8", True)  # CUDA torch in a CPU image
    assert gatekit.build_matches_flavor(True, "12.8", True)
    assert not gatekit.build_matches_flavor(True, None, False)  # CPU torch in a CUDA image
