"""The training loop the training-time benchmarks share: the digits task, a seeded Adam loop with the
Pruner's two added lines, test accuracy, and means over seeds.

A run is one call of ``train`` with a schedule (or none): the same seed gives the same initial
weights and the same shuffles (``DigitsTask.training_batches(epoch, seed)``), so two methods
differ only in what the Pruner does.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LR = 0.01  # DigitsTask.train's Adam step: the digits models reach 97-98 % with it


def make(model_name: str, seed: int) -> nn.Module:
    from prunectl_digits.models import build

    torch.manual_seed(seed)
    return build(model_name)


def example() -> torch.Tensor:
    from prunectl_digits.task import splits

    return splits()["train"][0][:2]


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, seed: int) -> None:
    from prunectl_digits.task import DigitsTask

    task = DigitsTask()
    model.train()
    for inputs, targets in task.training_batches(epoch, seed):
        optimizer.zero_grad(set_to_none=True)
        task.loss(model(inputs), targets).backward()
        optimizer.step()


def test_accuracy(model: nn.Module) -> float:
    """Percent correct on the 360-image test split (one image: 0.28 points)."""
    from prunectl.tasks import evaluate
    from prunectl_digits.task import DigitsTask

    return round(float(evaluate(model.eval(), DigitsTask().test_batches())), 2)


def train(model: nn.Module, epochs: int, seed: int, pruner_factory: Callable[[nn.Module], Any] | None = None,
          start: int = 0) -> tuple[nn.Module, Any]:
    """Train ``epochs`` epochs (numbered from ``start``), stepping the Pruner ``pruner_factory``
    builds on the model after each; finish it at the end. (model after finish, pruner)."""
    pruner = pruner_factory(model) if pruner_factory is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for epoch in range(start, start + epochs):
        train_epoch(model, optimizer, epoch, seed)
        if pruner is not None:
            pruner.step(epoch)
    if pruner is not None:
        model = pruner.finish()
    return model.eval(), pruner


def weight_zeros(model: nn.Module) -> float:
    """Fraction of the conv/linear weights that are exactly zero."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 2), "std": round(statistics.pstdev(values), 2),
            "per_seed": values}
