"""``auto --device`` and ``prunectl.auto(..., device=)``: on the CPU the bundle bytes of no device
(CLI and in-process alike); the caller's own evaluate/train get a model that takes their CPU
batches; a device that is not here is refused before anything runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from device_paths import take_the_device_paths
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("prunectl_digits")

import prunectl  # noqa: E402
from prunectl.cli import cli  # noqa: E402
from prunectl.errors import SpecError  # noqa: E402
from prunectl_digits.task import splits  # noqa: E402
from tests.support.digits import mlp_of  # noqa: E402
from tests.support.helpers import manifest_without_source  # noqa: E402

MISSING = "mps" if torch.cuda.is_available() else "cuda"
ARGS = ["--max-drop", "1", "--epochs", "1", "--max-steps", "2"]



def _cli(digits: Path, out: Path, *extra: str) -> None:
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"), "--task",
                                      "digits", *ARGS, *extra, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output


def test_device_cpu_gives_the_bytes_of_no_device_on_the_cli_and_in_process(digits, tmp_path: Path) -> None:
    _cli(digits, tmp_path / "plain")
    _cli(digits, tmp_path / "cpu", "--device", "cpu")
    result = prunectl.auto(mlp_of(digits), task="digits", spec=digits / "mlp.json", max_drop=1, epochs=1, max_steps=2,
                           device=torch.device("cpu"))
    result.save(tmp_path / "api")
    for name in ("model.safetensors", "report.json", "history.json", "manifest.json"):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "cpu" / name).read_bytes(), name
    for name in ("model.safetensors", "report.json", "history.json"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cpu" / name).read_bytes(), name
    assert manifest_without_source(tmp_path / "api") == manifest_without_source(tmp_path / "cpu")


def test_a_device_that_is_not_here_is_refused_before_anything_runs(digits, tmp_path: Path) -> None:
    calls = []
    with pytest.raises(SpecError, match=f"^--device {MISSING}: .*not available here"):
        prunectl.auto(mlp_of(digits), evaluate=lambda model: calls.append(1) or 0.0, device=MISSING,
                      output=tmp_path / "out")
    assert not calls and not (tmp_path / "out").exists()


def _own_callables():
    (train_x, train_y), (val_x, val_y) = splits()["train"], splits()["validation"]
    train_loader = DataLoader(TensorDataset(train_x, train_y), batch_size=64)
    val_loader = DataLoader(TensorDataset(val_x, val_y), batch_size=64)

    def evaluate(model):  # written for CPU batches, as most are
        return 100.0 * float((model(val_x).argmax(1) == val_y).float().mean())

    def train(model, epochs):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for x, y in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return evaluate, train, val_loader


def test_own_callables_with_device_cpu_are_the_run_without_it(digits) -> None:
    evaluate, train, val_loader = _own_callables()
    runs = []
    for device in (None, "cpu"):
        torch.manual_seed(0)
        options = {} if device is None else {"device": device}
        runs.append(prunectl.auto(mlp_of(digits), evaluate=evaluate, train=train, val_loader=val_loader, max_drop=1.0,
                                  epochs=1, max_steps=2, **options))
    assert runs[0].history == runs[1].history
    assert all(torch.equal(a, b) for a, b in zip(runs[0].model.state_dict().values(),
                                                 runs[1].model.state_dict().values()))


def test_the_device_paths_taken_on_the_cpu_change_nothing(digits, monkeypatch) -> None:
    evaluate, train, val_loader = _own_callables()
    runs = []
    for forced in (False, True):
        if forced:  # the task wrapped, the model fed through InputsOn, CAC's gradients and the proofs "moved"
            take_the_device_paths(monkeypatch)
        torch.manual_seed(0)
        runs.append(prunectl.auto(mlp_of(digits), evaluate=evaluate, train=train, val_loader=val_loader, max_drop=1.0,
                                  epochs=1, max_steps=2, device="cpu").history)
        torch.manual_seed(0)
        train_loader = DataLoader(TensorDataset(*splits()["train"]), batch_size=64)
        runs.append(prunectl.auto(mlp_of(digits), train_loader=train_loader, val_loader=val_loader, target_params=0.7,
                                  epochs=1, criterion="taylor", device="cpu").history)
    assert runs[0] == runs[2] and runs[1] == runs[3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_own_callables_run_on_cuda_and_the_bundle_is_written_from_the_cpu(digits, tmp_path: Path) -> None:
    evaluate, train, val_loader = _own_callables()
    result = prunectl.auto(mlp_of(digits), evaluate=evaluate, train=train, val_loader=val_loader, max_drop=1.0,
                           epochs=1, max_steps=2, device="cuda")
    assert next(result.model.parameters()).device.type == "cpu"
    bundle = result.save(tmp_path / "out")
    assert json.loads((bundle / "manifest.json").read_text())["device"] == "cuda:0"
    assert prunectl.verify(bundle)["checksums"] == "ok"
    _cli(digits, tmp_path / "cli", "--device", "cuda")
    assert prunectl.verify(tmp_path / "cli")["forward"] == "ok"
