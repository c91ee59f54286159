"""Determinism gate: one seeded training run, two fresh interpreters, bitwise-equal results.

Controls: a different seed must change the result (the hash sees the training), and an op
that PyTorch documents as having no deterministic implementation must raise under
deterministic mode (the mode is really on).
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable
from typing import Any

import gatekit
import pytest
import torch
import torch.nn.functional as F

SEED = 1234
OTHER_SEED = 4321
STEPS = 20
RUN_TIMEOUT_S = 600


def _start(command: list[str], seed: int, device: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*command, "--seed", str(seed), "--device", device, "--steps", str(STEPS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], what: str) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    if process.returncode != 0:
        pytest.fail(f"{what} exited with {process.returncode}:\n{stderr[-4000:]}", pytrace=False)
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="session")
def training_runs(components: gatekit.Components) -> Callable[[str], dict[str, dict[str, Any]]]:
    """``runs(device)``: three fresh-interpreter runs (seed A twice, seed B once), run at once."""
    cache: dict[str, dict[str, dict[str, Any]]] = {}

    def runs(device: str) -> dict[str, dict[str, Any]]:
        if device not in cache:
            started = {
                "first": _start(components.training_command, SEED, device),
                "second": _start(components.training_command, SEED, device),
                "other": _start(components.training_command, OTHER_SEED, device),
            }
            cache[device] = {
                name: _finish(process, f"training run '{name}' on {device}")
                for name, process in started.items()
            }
        return cache[device]

    return runs


def test_same_seed_is_bitwise_identical_across_processes(
    device: str,
    training_runs: Callable[[str], dict[str, dict[str, Any]]],
    observe: Any,
    fingerprint: Any,
) -> None:
    runs = training_runs(device)
    first, second = runs["first"], runs["second"]
    settings = first["settings"]
    observe(
        "reproducibility settings in the training process",
        expected="deterministic algorithms, cuDNN deterministic, no benchmark, 1 thread, "
        "CUBLAS_WORKSPACE_CONFIG=:4096:8, 2 DataLoader workers",
        observed=", ".join(f"{k}={v}" for k, v in sorted(settings.items())),
        ok=settings["deterministic_algorithms"]
        and settings["cudnn_deterministic"]
        and not settings["cudnn_benchmark"]
        and settings["threads"] == 1
        and settings["cublas_workspace_config"] == ":4096:8"
        and settings["dataloader_workers"] == 2,
    )
    losses = [float.fromhex(value) for value in first["losses"]]
    observe(
        "training losses finite",
        expected=f"{STEPS} finite losses",
        observed=f"{sum(math.isfinite(v) for v in losses)} finite of {len(losses)}, "
        f"first {losses[0]:.4f}, last {losses[-1]:.4f}",
        ok=len(losses) == STEPS and all(math.isfinite(v) for v in losses),
    )
    equal_losses = sum(a == b for a, b in zip(first["losses"], second["losses"], strict=True))
    observe(
        "losses bitwise equal in two fresh processes",
        expected=f"{STEPS}/{STEPS} equal",
        observed=f"{equal_losses}/{STEPS} equal",
        ok=equal_losses == STEPS,
    )
    differing = sorted(
        name
        for name in first["state_sha256"]
        if first["state_sha256"][name] != second["state_sha256"].get(name)
    )
    observe(
        "determinism hash (sha256 of every state_dict tensor) equal",
        expected=f"run 1: {first['combined_sha256'][:16]}",
        observed=f"run 2: {second['combined_sha256'][:16]}"
        + (f" (differs in {', '.join(differing)})" if differing else ""),
        ok=first["combined_sha256"] == second["combined_sha256"] and not differing,
    )
    fingerprint.fingerprint_entry(
        device,
        "determinism",
        {
            "seed": SEED,
            "steps": STEPS,
            "state_sha256": first["combined_sha256"],
            "losses_sha256": first["losses_sha256"],
            "final_loss": first["losses"][-1],
        },
    )


def test_different_seed_changes_the_result(
    device: str, training_runs: Callable[[str], dict[str, dict[str, Any]]], observe: Any
) -> None:
    runs = training_runs(device)
    observe(
        "control: another seed gives another hash",
        expected=f"differs from {runs['first']['combined_sha256'][:16]}",
        observed=runs["other"]["combined_sha256"][:16],
        ok=runs["other"]["combined_sha256"] != runs["first"]["combined_sha256"],
    )


#: Per device, an op PyTorch's ``use_deterministic_algorithms`` docs list among those that
#: "throw a RuntimeError when mode=True", the doc line naming it, and a call of it.
NONDETERMINISTIC_OPS: dict[str, tuple[str, Callable[[str], object]]] = {
    "cpu": (
        ":func:`torch.Tensor.put_` when ``accumulate=False``",
        lambda device: torch.zeros(4, device=device).put_(
            torch.tensor([0, 0], device=device), torch.tensor([1.0, 2.0], device=device)
        ),
    ),
    "cuda": (
        ":func:`torch.histc` when called on a CUDA tensor",
        lambda device: torch.histc(torch.rand(64, device=device), bins=8),
    ),
}


def test_op_without_deterministic_implementation_raises(
    device: str, observe: Any, components: gatekit.Components
) -> None:
    doc_line, call = NONDETERMINISTIC_OPS[device]
    doc = torch.use_deterministic_algorithms.__doc__
    if doc is not None:
        throwing = doc.split("will throw a", 1)[-1]
        observe(
            "op listed by this PyTorch as throwing in deterministic mode",
            expected=doc_line,
            observed="listed" if doc_line in throwing else "not in this version's list",
            ok=doc_line in throwing,
        )
    components.deterministic_mode(True)
    try:
        call(device)
        outcome = "no error"
    except RuntimeError as error:
        outcome = f"RuntimeError: {str(error).split(',')[0]}"
    finally:
        components.deterministic_mode(False)
    observe(
        "control: nondeterministic op raises under deterministic mode",
        expected="RuntimeError: ... does not have a deterministic implementation",
        observed=outcome,
        ok="does not have a deterministic implementation" in outcome,
    )


def _reference_outputs(device: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(20240601)

    def rand(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype).to(device)

    a64, b64 = rand(32, 48, dtype=torch.float64), rand(48, 16, dtype=torch.float64)
    a32, b32 = rand(32, 48), rand(48, 16)
    image, kernel = rand(2, 3, 16, 16), rand(4, 3, 3, 3)
    q, k, v = rand(1, 2, 8, 16), rand(1, 2, 8, 16), rand(1, 2, 8, 16)
    torch.manual_seed(0)
    model = gatekit.TinyConvNet().to(device).eval()
    with torch.no_grad():
        return {
            "matmul_float64": a64 @ b64,
            "matmul_float32": a32 @ b32,
            "conv2d_float32": F.conv2d(image, kernel, padding=1),
            "log_softmax_float32": F.log_softmax(a32, dim=-1),
            "sdpa_float32": F.scaled_dot_product_attention(q, k, v),
            "tinyconvnet_forward": model(rand(4, 1, 8, 8)),
        }


def test_reference_outputs_repeat_bitwise(device: str, observe: Any, fingerprint: Any) -> None:
    torch.use_deterministic_algorithms(True)
    first, second = _reference_outputs(device), _reference_outputs(device)
    hashes = {name: gatekit.tensor_sha256(value) for name, value in first.items()}
    repeated = [name for name in first if gatekit.tensor_sha256(second[name]) == hashes[name]]
    finite = [name for name, value in first.items() if bool(torch.isfinite(value).all())]
    fingerprint.fingerprint_entry(
        device,
        "reference_outputs",
        {
            name: {
                "sha256": hashes[name],
                "sum": float(value.double().sum()).hex(),
                "head": [float(x).hex() for x in value.reshape(-1)[:4].tolist()],
            }
            for name, value in first.items()
        },
    )
    observe(
        "reference outputs finite",
        expected=f"{len(first)}/{len(first)} finite",
        observed=f"{len(finite)}/{len(first)} finite",
        ok=len(finite) == len(first),
    )
    observe(
        "reference outputs bitwise equal when recomputed",
        expected=f"{len(first)}/{len(first)} equal",
        observed=f"{len(repeated)}/{len(first)} equal",
        ok=len(repeated) == len(first),
    )
