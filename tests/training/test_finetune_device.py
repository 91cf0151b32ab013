"""``finetune --device``: on the CPU the bundle of no device, byte for byte; the task's own metric
(written for CPU batches) works on the device through the wrapper (training/device_task.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from helpers import ROOT

from prunectl.cli import cli
from prunectl.models.device import CPU
from prunectl.training.device_task import DeviceTask, on_device_task

pytest.importorskip("prunectl_digits")

SPEC = ROOT / "fixtures" / "specs" / "small_mlp.json"


def _files(bundle: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(bundle.iterdir()) if path.is_file()}


def test_finetune_on_device_cpu_is_the_run_without_it(checkpoints, tmp_path: Path) -> None:
    runner = CliRunner()
    bundle = tmp_path / "bundle"
    assert runner.invoke(cli, ["prune", str(checkpoints["small_mlp"]), "--spec", str(SPEC), "-o", str(bundle),
                               "-q"]).exit_code == 0
    for out, extra in (("plain", []), ("cpu", ["--device", "cpu"])):
        result = runner.invoke(cli, ["finetune", str(bundle), "--task", "digits", "--epochs", "1", *extra,
                                     "-o", str(tmp_path / out), "-q"])
        assert result.exit_code == 0, result.output
    assert _files(tmp_path / "plain") == _files(tmp_path / "cpu")


class _Task:
    """A task written for a CPU model: its metric feeds CPU batches and reads CPU outputs."""

    def __init__(self):
        self.seen: list[torch.device] = []

    def metric(self, model: nn.Module) -> float:
        with torch.no_grad():
            output = model(torch.ones(2, 3))
        self.seen.append(output.device)
        return float(output.sum())

    def loss(self, output, target):
        return (output - target).pow(2).mean()


def test_the_task_is_itself_on_the_cpu_and_wrapped_elsewhere() -> None:
    task = _Task()
    assert on_device_task(task, CPU) is task and on_device_task(task, None) is task
    wrapped = DeviceTask(task, CPU)
    assert wrapped.train_epoch is None  # the task has none: fine_tune runs its own loop
    model = nn.Linear(3, 1)
    assert wrapped.loss == task.loss and wrapped.metric(model) == task.metric(model)
    assert task.seen and all(device == CPU for device in task.seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cpu_task_measures_a_model_on_cuda() -> None:
    task, model = _Task(), nn.Linear(3, 1)
    value = on_device_task(task, torch.device("cuda")).metric(model)
    assert task.seen == [CPU] and next(model.parameters()).device == CPU  # moved for the metric, and back
    assert value == pytest.approx(task.metric(model), rel=1e-6)
