"""A task whose model runs on ``--device``: the task's (or the caller's) code is unchanged.

A task plugin's ``metric(model)``, and in-process ``evaluate``/``train`` callables, were written
for a CPU model fed CPU batches. ``on_device_task(task, device)`` hands them the model on the
device, wrapped so that their CPU batches go there and the outputs come back
(``models.device.InputsOn``); the batches, the loss and the optimizer are the task's own. On the
CPU it is the task itself, so CPU runs are what they were.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..models.device import fed_on, is_cpu, on_device
from ..tasks import Task


class DeviceTask:
    """``task`` with ``metric`` and ``train_epoch`` run on ``device``; every other attribute is the task's."""

    def __init__(self, task: Task, device: torch.device):
        self.task, self.device = task, device
        if callable(getattr(task, "train_epoch", None)):
            self.train_epoch = self._train_epoch

    def __getattr__(self, name: str) -> Any:  # only for what __init__ did not set
        if name in ("task", "device"):
            raise AttributeError(name)
        if name == "train_epoch":
            return None  # the task has none: fine_tune's own loop
        return getattr(self.task, name)

    def metric(self, model: nn.Module) -> float:
        with on_device(model, self.device):
            return self.task.metric(fed_on(model, self.device))

    def _train_epoch(self, model: nn.Module, epoch: int, seed: int) -> None:
        with on_device(model, self.device):
            self.task.train_epoch(fed_on(model, self.device), epoch, seed)


def on_device_task(task: Task, device: torch.device | None) -> Task:
    """``task`` itself on the CPU, else a ``DeviceTask``."""
    return task if is_cpu(device) or isinstance(task, DeviceTask) else DeviceTask(task, torch.device(device))
