"""tests/image/train.py with one fault in the training process (fault injection).

The fault is named by ``LOCKDOCK_GATES_FAULT`` (inherited from the payload run):

- ``nondeterministic-op``: the final linear layer gets a hand-written backward that sums the
  per-sample weight gradients in an order drawn from OS entropy — what atomicAdd-based CUDA
  kernels do. Float addition is not associative, so two runs drift apart bitwise.
- ``buffer-drift``: a running statistic (a buffer, as BatchNorm keeps) that accumulates an
  OS-entropy value each step; it is in the state_dict but not in the loss, so the losses of
  two runs agree bit for bit while the state hash differs.
- ``loss-drift-1e-7``: the logits scaled by ``1 + (1.5 + u) * 1e-7`` (``u`` from OS
  entropy): the runs differ by about 1e-7 relative — caught only because equality is bitwise.
- ``seed-ignored``: ``--seed`` is dropped (a hard-coded seed), so another seed gives the
  same hash.
- ``deterministic-mode-off-in-training``: the run forgets
  ``torch.use_deterministic_algorithms(True)``; on the CPU its results still agree, so only
  the settings check can see it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

PAYLOAD = Path(__file__).resolve().parents[1] / "image"
sys.path.insert(0, str(PAYLOAD))

import gatekit  # noqa: E402
import torch  # noqa: E402
import train  # noqa: E402  (sets CUBLAS_WORKSPACE_CONFIG before CUDA starts, as in the payload)

FAULT = os.environ.get("LOCKDOCK_GATES_FAULT", "")


def _entropy_uniform() -> float:
    """A number in [-1, 1) from OS entropy: differs between runs whatever the seeds."""
    return int.from_bytes(os.urandom(8), "little") / 2**63 - 1.0


class UnorderedAccumulationLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> Any:
        ctx.save_for_backward(x, weight)
        return x @ weight.t() + bias

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        x, weight = ctx.saved_tensors
        entropy = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
        grad_weight = torch.zeros_like(weight)
        grad_bias = torch.zeros_like(weight[:, 0])
        for i in torch.randperm(x.shape[0], generator=entropy).tolist():
            grad_weight += torch.outer(grad[i], x[i])
            grad_bias += grad[i]
        return grad @ weight, grad_weight, grad_bias


class NondeterministicTinyConvNet(gatekit.TinyConvNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        features = self.dropout(torch.flatten(h, 1))
        out: torch.Tensor = UnorderedAccumulationLinear.apply(
            features, self.fc.weight, self.fc.bias
        )
        return out


class BufferDriftTinyConvNet(gatekit.TinyConvNet):
    def __init__(self, classes: int = 4) -> None:
        super().__init__(classes)
        self.register_buffer("running_mean", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            # not scaled by the batch: a zero-mean batch must not hide the drift (a CI run
            # once saw two runs agree); a fresh uniform in [1, 2) each step differs per run
            self.running_mean += 1.0 + _entropy_uniform()
        return super().forward(x)


class LossDriftTinyConvNet(gatekit.TinyConvNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 rounds 1 + 1e-7 to 1 + 1.19e-7 or 1 + 2.38e-7 (never to 1): ~1e-7 drift
        return super().forward(x) * (1 + 1e-7 * (1.5 + _entropy_uniform()))


def _without_seed(argv: list[str]) -> list[str]:
    out = list(argv)
    out[out.index("--seed") + 1] = "1234"
    return out


def main() -> None:
    argv = sys.argv[1:]
    if FAULT == "nondeterministic-op":
        gatekit.TinyConvNet = NondeterministicTinyConvNet  # type: ignore[misc]
    elif FAULT == "buffer-drift":
        gatekit.TinyConvNet = BufferDriftTinyConvNet  # type: ignore[misc]
    elif FAULT == "loss-drift-1e-7":
        gatekit.TinyConvNet = LossDriftTinyConvNet  # type: ignore[misc]
    elif FAULT == "seed-ignored":
        argv = _without_seed(argv)
    elif FAULT == "deterministic-mode-off-in-training":
        configure = train.configure

        def configure_without_deterministic_mode(seed: int) -> None:
            configure(seed)
            torch.use_deterministic_algorithms(False)

        train.configure = configure_without_deterministic_mode
    else:
        raise SystemExit(f"train_faulty.py: unknown LOCKDOCK_GATES_FAULT={FAULT!r}")
    train.main(argv)


if __name__ == "__main__":
    main()
