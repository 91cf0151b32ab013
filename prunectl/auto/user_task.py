"""The task protocol (``prunectl.tasks.Task``) over a caller's own callables and loaders, so that
``prunectl.auto(model, evaluate=..., train=..., val_loader=...)`` runs the search ``prunectl auto
--task`` runs: the searches only ever ask a task for batches, a loss, a metric and training.

- ``evaluate(model) -> float``: the metric, higher is better (accuracy in points, as
  ``--max-drop`` counts); default: top-1 accuracy in percent over ``val_loader``.
- ``train(model, epochs)``: the caller's own training; prunectl calls it with ``epochs=1`` once per
  retraining epoch, so that it can evaluate after every epoch (CAC stops a retrain as soon as the
  accuracy is back within budget). Default: prunectl's loop (training/finetune.py) over
  ``train_loader``'s batches, reshuffled every epoch.
- ``train_loader`` also gives the batches data-driven criteria score on; ``val_loader`` the batches
  CAC's sensitivities and NetAdapt's tie-breaking loss are computed on.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import SpecError, first_line
from ..loading.data import CalibrationData
from ..tasks import Batch, evaluate

Evaluate = Callable[[nn.Module], Any]
Train = Callable[[nn.Module, int], Any]


class UserTask:
    """A Task made of the caller's objects; every value it gets back from them is checked."""

    def __init__(self, evaluate_fn: Evaluate | None, train_fn: Train | None, training: CalibrationData | None,
                 validation: CalibrationData | None, loss: Callable | None):
        self.evaluate_fn, self.train_fn = evaluate_fn, train_fn
        # only a task with a train() of its own has train_epoch: fine_tune's own loop runs otherwise
        self.train_epoch = self._train_epoch if train_fn is not None else None
        self.training, self.validation = training, validation
        given = training if training is not None and training.loss is not None else validation
        self._loss = loss or (given.loss if given is not None else None)

    def calibration_batches(self) -> list[Batch]:
        if self.training is None:
            raise SpecError("prunectl.auto: this needs training batches (a data-driven criterion, or retraining "
                            "without train=): pass train_loader=")
        return [(x, y) for x, y in self.training.batches]

    def validation_batches(self) -> list[Batch]:
        return [] if self.validation is None else [(x, y) for x, y in self.validation.batches]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._loss is None:
            raise SpecError("prunectl.auto: the loaders give no targets to compute a loss on; pass batches of "
                            "(inputs, targets)")
        return self._loss(output, target)

    def metric(self, model: nn.Module) -> float:
        if self.evaluate_fn is None:
            return evaluate(model, self.validation_batches())
        model.eval()
        with torch.no_grad():
            value = self.evaluate_fn(model)
        return checked_score(value)

    def _train_epoch(self, model: nn.Module, epoch: int, seed: int) -> None:
        """One epoch of the caller's ``train`` (``training/finetune.py`` calls it instead of its own loop)."""
        try:
            self.train_fn(model, 1)
        except SpecError:
            raise
        except Exception as exc:
            raise SpecError(f"prunectl.auto: train(model, 1) raised {type(exc).__name__}: {first_line(exc)}") from None


def checked_score(value: Any) -> float:
    """``evaluate``'s return value as a float: a real number (or a one-element tensor), finite."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecError(f"prunectl.auto: evaluate(model) must return a number (higher is better), got "
                        f"{type(value).__name__} {value!r:.60}")
    if not math.isfinite(float(value)):
        raise SpecError(f"prunectl.auto: evaluate(model) returned {float(value)}, not a finite number")
    return float(value)
