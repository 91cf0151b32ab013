"""The ``digits`` task: scikit-learn's 8x8 handwritten digits, offline, split deterministically.

1,797 images ship inside scikit-learn (no download). A fixed permutation (seed 0) splits them
60/20/20 into train, validation and test; pixel values 0..16 are scaled to 0..1. Inputs are
``[N, 1, 8, 8]`` float32 (the MLP flattens them), targets are class indices.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from prunectl.tasks import evaluate

BATCH_SIZE = 64


@lru_cache(maxsize=1)
def splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train_end, val_end = int(0.6 * len(order)), int(0.8 * len(order))
    parts = {"train": order[:train_end], "validation": order[train_end:val_end], "test": order[val_end:]}
    return {name: (images[idx], labels[idx]) for name, idx in parts.items()}


def batches(split: str, batch_size: int = BATCH_SIZE) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    inputs, targets = splits()[split]
    for start in range(0, len(targets), batch_size):
        yield inputs[start:start + batch_size], targets[start:start + batch_size]


def shuffle_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed from ``(seed, epoch)``: stable across runs and platforms, and
    unrelated for neighbouring epochs (``seed + epoch`` would repeat shuffles across seeds)."""
    digest = hashlib.sha256(f"digits-train,{int(seed)},{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class DigitsTask:
    """A prunectl task (see ``prunectl.tasks.Task``)."""

    name = "digits"
    calibration_examples = 512  # enough for the data-driven criteria, quick on 2 cores

    def calibration_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        inputs, targets = splits()["train"]
        count = self.calibration_examples
        return list(zip(inputs[:count].split(BATCH_SIZE), targets[:count].split(BATCH_SIZE)))

    def training_batches(self, epoch: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The whole training split (1,078 images) for fine-tuning, shuffled from ``(seed, epoch)``
        only: the same arguments give the same batches, so resumed and multi-process runs agree."""
        inputs, targets = splits()["train"]
        order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(shuffle_seed(seed, epoch)))
        return [(inputs[idx], targets[idx]) for idx in order.split(BATCH_SIZE)]

    def validation_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches("validation")

    def test_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches("test")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target)

    def metric(self, model: nn.Module) -> float:
        """Validation accuracy in percent."""
        return evaluate(model, self.validation_batches())

    def train(self, model: nn.Module, epochs: int = 30, seed: int = 0, lr: float = 0.01) -> nn.Module:
        """Adam on the training split, reshuffled each epoch by a seeded generator: same seed,
        same weights (single-threaded CPU kernels are deterministic)."""
        generator = torch.Generator().manual_seed(seed)
        inputs, targets = splits()["train"]
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(targets), generator=generator)
            for idx in order.split(BATCH_SIZE):
                optimizer.zero_grad(set_to_none=True)
                self.loss(model(inputs[idx]), targets[idx]).backward()
                optimizer.step()
        return model.eval()
