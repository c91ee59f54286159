"""One short, fully seeded training run in a fresh interpreter; prints a JSON result.

Run as ``python train.py --seed N --device cpu|cuda``. test_determinism.py starts it twice
with one seed and once with another and compares the results bit for bit.

The settings follow PyTorch's reproducibility notes: ``CUBLAS_WORKSPACE_CONFIG`` before
CUDA starts, ``torch.use_deterministic_algorithms(True)``, cuDNN deterministic and no
benchmark, seeds for torch, numpy and random, a DataLoader ``generator`` and a
``worker_init_fn`` that seeds each worker, and a fixed thread count.
"""

from __future__ import annotations

import os

# cuBLAS reads this when CUDA creates its handle: it must be set before torch touches CUDA.
os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"

import argparse
import json
import random
import sys
from typing import Any

import gatekit
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

try:
    import numpy
except ImportError:  # numpy is optional in an image; torch does not need it
    numpy = None

THREADS = 1
WORKERS = 2
BATCH = 16
SAMPLES = 160  # 10 batches: 20 steps are two shuffled epochs
CLASSES = 4


def configure(seed: int) -> None:
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(THREADS)
    random.seed(seed)
    if numpy is not None:
        numpy.random.seed(seed)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from the seed torch gave the worker."""
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    if numpy is not None:
        numpy.random.seed(worker_seed)


class SyntheticImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Fixed 8x8 images with class-dependent blobs; __getitem__ augments with worker RNGs."""

    def __init__(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, CLASSES, (SAMPLES,), generator=generator)
        base = torch.randn(SAMPLES, 1, 8, 8, generator=generator) * 0.5
        for index, label in enumerate(self.labels.tolist()):
            row, col = divmod(label, 2)
            base[index, 0, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4] += 1.0
        self.images = base

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].clone()
        if random.random() < 0.5:  # python RNG: seeded per worker by seed_worker
            image = image.flip(-1)
        image += 0.05 * torch.randn(image.shape)  # torch RNG: seeded per worker by DataLoader
        if numpy is not None:  # numpy RNG: seeded per worker by seed_worker
            image += float(numpy.random.uniform(-0.01, 0.01))
        return image, self.labels[index]


def batch_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets)


def train(seed: int, device: str, steps: int) -> dict[str, Any]:
    configure(seed)
    loader_generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        SyntheticImages(seed),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=WORKERS,
        worker_init_fn=seed_worker,
        generator=loader_generator,
    )
    model = gatekit.TinyConvNet(CLASSES).to(device)
    model.train()  # dropout on
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses: list[float] = []
    while len(losses) < steps:
        for images, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(model(images.to(device)), labels.to(device))
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    per_tensor = gatekit.state_dict_sha256(model.state_dict())
    return {
        "seed": seed,
        "device": device,
        "torch": torch.__version__,
        "losses": [value.hex() for value in losses],
        "losses_sha256": gatekit.floats_sha256(losses),
        "state_sha256": per_tensor,
        "combined_sha256": gatekit.combined_sha256(per_tensor),
        "settings": {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "threads": torch.get_num_threads(),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            "dataloader_workers": WORKERS,
            "numpy_seeded": numpy is not None,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    json.dump(train(args.seed, args.device, args.steps), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
