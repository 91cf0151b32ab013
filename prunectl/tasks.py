"""The task plugin interface (entry-point group ``prunectl.tasks``).

A task gives data-driven criteria (and later automatic rates and fine-tuning) what they need
about a model's job: batches to score on, batches to validate on, the loss and the metric.
Register a class or a zero-argument callable returning an object with these methods::

    [project.entry-points."prunectl.tasks"]
    digits = "prunectl_digits.task:DigitsTask"

Batches are ``(inputs, targets)`` pairs of tensors. ``metric`` is "higher is better" (for
example accuracy in percent on ``validation_batches``). ``train`` is optional.

Optional, for fine-tuning (``prunectl finetune`` and ``prunectl auto``; see prunectl/training/finetune.py
for the fallbacks used when a task leaves them out):

- ``training_batches(epoch, seed)``: the training split for one epoch, shuffled from
  ``(seed, epoch)`` only (same arguments, same batches). Fallback: the calibration batches,
  concatenated and reshuffled the same way.
- ``optimizer(parameters)``: a ``torch.optim.Optimizer``. Fallback: SGD, momentum 0.9,
  lr 0.01, weight decay 5e-4, with a cosine learning-rate decay over the fine-tune.
- ``fine_tune_epochs``: an int, the default ``--epochs`` of ``prunectl finetune``. Fallback: 5.
"""
from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable

import torch
import torch.nn as nn

from . import registry
from .errors import SpecError

Batch = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class Task(Protocol):
    def calibration_batches(self) -> Iterable[Batch]:
        """Training-split batches for scoring channels (never the test split)."""

    def validation_batches(self) -> Iterable[Batch]:
        """Held-out batches for ``metric``."""

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """A scalar, differentiable loss for ``output = model(inputs)``."""

    def metric(self, model: nn.Module) -> float:
        """The model's quality on ``validation_batches``, higher is better."""


def get_task(name: str) -> Task:
    """Instantiate the task registered as ``name`` and check it has the Task methods."""
    factory = registry.load(registry.TASKS, name)
    task = factory() if callable(factory) else factory
    missing = [m for m in ("calibration_batches", "validation_batches", "loss", "metric")
               if not callable(getattr(task, m, None))]
    if missing:
        raise SpecError(f"task {name!r} lacks {', '.join(missing)}; see prunectl.tasks.Task")
    return task


def evaluate(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Top-1 accuracy in percent: a ready-made ``metric`` for classification tasks."""
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for inputs, targets in batches:
            correct += int((model(inputs).argmax(dim=1) == targets).sum())
            total += len(targets)
    return 100.0 * correct / max(total, 1)
