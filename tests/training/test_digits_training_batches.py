"""The digits task's ``training_batches``: the whole training split, reshuffled per epoch from
``(seed, epoch)`` only, and what ``prunectl.finetune`` trains on when a task provides it."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("prunectl_digits")

from prunectl.training.finetune import training_batches  # noqa: E402
from prunectl_digits.task import DigitsTask, splits  # noqa: E402


def _order(batches) -> list[int]:
    """Each example identified by its pixels' hash, in batch order."""
    return [hash(x.numpy().tobytes()) for inputs, _ in batches for x in inputs]


def test_one_epoch_is_the_whole_training_split_once():
    inputs, targets = splits()["train"]
    batches = DigitsTask().training_batches(0, 0)
    assert sum(len(y) for _, y in batches) == len(targets) > len(DigitsTask().calibration_batches()) * 64
    assert sorted(_order(batches)) == sorted(hash(x.numpy().tobytes()) for x in inputs)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(targets.tolist())


def test_same_seed_and_epoch_same_batches_else_another_order():
    task = DigitsTask()
    first, again = task.training_batches(3, 7), DigitsTask().training_batches(3, 7)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert _order(first) != _order(task.training_batches(4, 7))
    assert _order(first) != _order(task.training_batches(3, 8))


def test_fine_tuning_uses_the_tasks_training_split():
    task = DigitsTask()
    used = training_batches(task, 2, 5)
    assert _order(used) == _order(task.training_batches(2, 5))
