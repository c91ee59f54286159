"""Gradient-correctness gate: autograd against finite differences, and training health.

- ``gradcheck``/``gradgradcheck`` in float64 over a catalogue of ops and a custom
  ``autograd.Function``;
- a small module's parameter gradients through ``torch.func.functional_call`` against
  central differences;
- the training-health checklist on a separable toy task: initial cross-entropy near ln k,
  outputs finite, every trainable parameter gets a gradient, gradients finite and of sane
  magnitude, a few SGD steps reduce the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gatekit
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.gradcheck import GradcheckError

Case = tuple[Callable[..., Any], tuple[torch.Tensor, ...]]
GRADCHECK_TOLERANCES = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}


def _inputs(device: str, *shapes: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(*shape, generator=generator, dtype=torch.float64)
        .to(device)
        .requires_grad_(True)
        for shape in shapes
    )


def _matmul(device: str, components: gatekit.Components) -> Case:
    return torch.matmul, _inputs(device, (3, 4), (4, 2))


def _conv2d(device: str, components: gatekit.Components) -> Case:
    return (
        lambda x, w, b: F.conv2d(x, w, b, padding=1),
        _inputs(device, (1, 2, 5, 5), (3, 2, 3, 3), (3,)),
    )


def _layer_norm(device: str, components: gatekit.Components) -> Case:
    return (
        lambda x, w, b: F.layer_norm(x, (4,), w, b),
        _inputs(device, (2, 3, 4), (4,), (4,)),
    )


def _softmax(device: str, components: gatekit.Components) -> Case:
    return (lambda x: F.softmax(x, dim=-1)), _inputs(device, (3, 5))


def _log_softmax(device: str, components: gatekit.Components) -> Case:
    return (lambda x: F.log_softmax(x, dim=-1)), _inputs(device, (3, 5))


def _sdpa(device: str, components: gatekit.Components) -> Case:
    return F.scaled_dot_product_attention, _inputs(device, (1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4))


def _embedding(device: str, components: gatekit.Components) -> Case:
    indices = torch.tensor([[0, 2, 2], [5, 1, 0]], device=device)
    return (lambda weight: F.embedding(indices, weight)), _inputs(device, (6, 3))


def _lstm_cell(device: str, components: gatekit.Components) -> Case:
    cell = nn.LSTMCell(3, 4).to(device=device, dtype=torch.float64)
    names = [name for name, _ in cell.named_parameters()]

    def step(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, *params: torch.Tensor) -> Any:
        return torch.func.functional_call(cell, dict(zip(names, params, strict=True)), (x, (h, c)))

    params = tuple(p.detach().clone().requires_grad_(True) for p in cell.parameters())
    return step, (*_inputs(device, (2, 3), (2, 4), (2, 4)), *params)


def _custom_function(device: str, components: gatekit.Components) -> Case:
    return components.custom_function.apply, _inputs(device, (3, 4), (1,))


CATALOGUE: dict[str, Callable[[str, gatekit.Components], Case]] = {
    "matmul": _matmul,
    "conv2d": _conv2d,
    "layer_norm": _layer_norm,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "scaled_dot_product_attention": _sdpa,
    "embedding": _embedding,
    "lstm_cell": _lstm_cell,
    "custom_function": _custom_function,
}


def _outcome(check: Callable[..., bool], fn: Callable[..., Any], inputs: Any) -> str:
    try:
        check(fn, inputs, raise_exception=True, **GRADCHECK_TOLERANCES)
    except GradcheckError as error:
        return "mismatch: " + " ".join(str(error).split())[:160]
    return "match"


@pytest.mark.parametrize("op", list(CATALOGUE))
def test_gradcheck(op: str, device: str, components: gatekit.Components, observe: Any) -> None:
    fn, inputs = CATALOGUE[op](device, components)
    observed = _outcome(torch.autograd.gradcheck, fn, inputs)
    observe(
        f"gradcheck {op} (float64, {device})",
        expected="analytical == numerical Jacobian",
        observed=observed,
        ok=observed == "match",
    )


#: Ops whose default kernels have no double backward: second order runs on the math kernel.
SECOND_ORDER_KERNEL = {"scaled_dot_product_attention": "math"}


@pytest.mark.parametrize("op", list(CATALOGUE))
def test_gradgradcheck(op: str, device: str, components: gatekit.Components, observe: Any) -> None:
    fn, inputs = CATALOGUE[op](device, components)
    kernel = SECOND_ORDER_KERNEL.get(op)
    if kernel == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            observed = _outcome(torch.autograd.gradgradcheck, fn, inputs)
    else:
        observed = _outcome(torch.autograd.gradgradcheck, fn, inputs)
    observe(
        f"gradgradcheck {op} (float64, {device}{', math kernel' if kernel else ''})",
        expected="analytical == numerical second derivative",
        observed=observed,
        ok=observed == "match",
    )


def test_module_gradients_match_central_differences(
    device: str, components: gatekit.Components, observe: Any
) -> None:
    torch.manual_seed(0)
    module = components.reference_module().to(device=device, dtype=torch.float64)
    (x,) = _inputs(device, (5, 3), seed=1)
    x = x.detach()
    params = {name: p.detach().clone() for name, p in module.named_parameters()}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        out = torch.func.functional_call(module, p, (x,))
        return (out.sin() * out).sum()

    analytic = torch.func.grad(loss)(params)
    eps, worst, count = 1e-6, 0.0, 0
    with torch.no_grad():
        for name, value in params.items():
            flat = value.view(-1)
            for i in range(flat.numel()):
                original = flat[i].item()
                flat[i] = original + eps
                plus = loss(params).item()
                flat[i] = original - eps
                minus = loss(params).item()
                flat[i] = original
                numeric = (plus - minus) / (2 * eps)
                got = analytic[name].reshape(-1)[i].item()
                worst = max(worst, abs(got - numeric) / (1e-6 + abs(numeric)))
                count += 1
    observe(
        f"functional_call parameter gradients vs central differences ({device})",
        expected=f"max relative error < 1e-5 over {count} parameters",
        observed=f"max relative error {worst:.2e} over {count} parameters",
        ok=worst < 1e-5 and count == sum(p.numel() for p in module.parameters()),
    )


# --- training health ----------------------------------------------------------------------

CLASSES = 4


def _separable_task(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Four well-separated Gaussian blobs in 2-D, one per class."""
    generator = torch.Generator().manual_seed(7)
    labels = torch.arange(128) % CLASSES
    centers = torch.tensor([[3.0, 3.0], [-3.0, 3.0], [-3.0, -3.0], [3.0, -3.0]])
    points = centers[labels] + 0.5 * torch.randn(128, 2, generator=generator)
    return points.to(device), labels.to(device)


def _health_model(components: gatekit.Components, device: str) -> nn.Module:
    torch.manual_seed(0)
    return components.health_model(2, CLASSES).to(device)


def test_initial_loss_near_ln_k(device: str, components: gatekit.Components, observe: Any) -> None:
    points, labels = _separable_task(device)
    model = _health_model(components, device)
    with torch.no_grad():
        logits = model(points)
    finite = bool(torch.isfinite(logits).all())
    observe(
        f"outputs finite ({device})",
        expected="all logits finite",
        observed="all finite" if finite else "NaN/Inf in logits",
        ok=finite,
    )
    loss = F.cross_entropy(logits, labels).item()
    observe(
        f"initial loss ≈ ln k, k={CLASSES} ({device})",
        expected=f"{math.log(CLASSES):.3f} ± 0.25",
        observed=f"{loss:.3f}",
        ok=abs(loss - math.log(CLASSES)) <= 0.25,
    )


def _first_gradients(components: gatekit.Components, device: str) -> nn.Module:
    points, labels = _separable_task(device)
    model = _health_model(components, device)
    F.cross_entropy(model(points), labels).backward()
    return model


def test_every_trainable_parameter_has_a_gradient(
    device: str, components: gatekit.Components, observe: Any
) -> None:
    model = _first_gradients(components, device)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    observe(
        f"gradients present ({device})",
        expected=f"{len(trainable)}/{len(trainable)} trainable parameters have .grad",
        observed=f"{len(trainable) - len(missing)}/{len(trainable)}"
        + (f" (None: {', '.join(missing)})" if missing else ""),
        ok=bool(trainable) and not missing,
    )


def test_gradients_finite_with_sane_magnitude(
    device: str, components: gatekit.Components, observe: Any
) -> None:
    """Checks the gradients that exist; a missing one is the previous test's failure."""
    model = _first_gradients(components, device)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    not_finite = [n for n, g in grads.items() if not bool(torch.isfinite(g).all())]
    observe(
        f"gradients finite ({device})",
        expected="no NaN/Inf",
        observed=f"NaN/Inf in {', '.join(not_finite)}" if not_finite else "none",
        ok=bool(grads) and not not_finite,
    )
    norms = {n: float(g.norm()) for n, g in grads.items()}
    total = math.sqrt(sum(v * v for v in norms.values()))
    observe(
        f"gradient magnitude ({device})",
        expected="global norm in [1e-4, 1e2]; every parameter's norm > 0",
        observed=f"global {total:.3e}; per parameter {min(norms.values()):.3e}"
        f"..{max(norms.values()):.3e}",
        ok=1e-4 <= total <= 1e2 and min(norms.values()) > 0,
    )


def test_sgd_steps_reduce_loss(device: str, components: gatekit.Components, observe: Any) -> None:
    points, labels = _separable_task(device)
    model = _health_model(components, device)
    optimizer = components.health_optimizer(model.parameters())
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(points), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    observe(
        f"SGD reduces loss on a separable task ({device})",
        expected="after 30 steps < half the initial loss",
        observed=f"{losses[0]:.3f} -> {losses[-1]:.3f}",
        ok=all(math.isfinite(v) for v in losses) and losses[-1] < 0.5 * losses[0],
    )
