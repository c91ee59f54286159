"""tests/image/train.py with a nondeterministic op in the training step (fault injection).

The model's final linear layer gets a hand-written backward that sums the per-sample weight
gradients in an order drawn from OS entropy — what atomicAdd-based CUDA kernels do. Float
addition is not associative, so two runs with the same seed drift apart bitwise. Nothing in
the seeds or in ``torch.use_deterministic_algorithms`` can see it: only comparing two runs can.
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


if __name__ == "__main__":
    gatekit.TinyConvNet = NondeterministicTinyConvNet  # type: ignore[misc]
    train.main()
