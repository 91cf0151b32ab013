"""prunectl.auto on an in-memory model: the CLI's search and bundle bytes, the caller's own evaluate,
train and loaders, the soft model of the plan, and bad input as one-line errors."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("prunectl_digits")

import prunectl  # noqa: E402
from prunectl.cli import cli  # noqa: E402
from prunectl.errors import SpecError  # noqa: E402
from prunectl_digits.task import splits  # noqa: E402
from tests.support.digits import mlp_of  # noqa: E402
from tests.support.helpers import manifest_without_source  # noqa: E402


def test_a_named_task_gives_the_cli_bundle_bytes(digits, tmp_path):
    args = ["--max-drop", "1", "--epochs", "1", "--max-steps", "2"]
    assert CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"), "--task",
                                    "digits", *args, "-o", str(tmp_path / "cli"), "-q"]).exit_code == 0
    result = prunectl.auto(mlp_of(digits), task="digits", spec=digits / "mlp.json", max_drop=1, epochs=1, max_steps=2)
    assert result.output is None and not (tmp_path / "api").exists()  # nothing written until save
    result.save(tmp_path / "api")
    for name in ("model.safetensors", "report.json", "history.json"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert manifest_without_source(tmp_path / "api") == manifest_without_source(tmp_path / "cli")


def _loaders():
    (train_x, train_y), (val_x, val_y) = splits()["train"], splits()["validation"]
    return (DataLoader(TensorDataset(train_x, train_y), batch_size=64),
            DataLoader(TensorDataset(val_x, val_y), batch_size=64), val_x, val_y)


def test_own_evaluate_and_train_drive_the_cac_search(digits, tmp_path):
    train_loader, val_loader, val_x, val_y = _loaders()
    calls = {"evaluate": 0, "train": []}

    def evaluate(model):
        calls["evaluate"] += 1
        return 100.0 * float((model(val_x).argmax(1) == val_y).float().mean())

    def train(model, epochs):
        calls["train"].append(epochs)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for x, y in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    original = mlp_of(digits)
    result = prunectl.auto(original, evaluate=evaluate, train=train, val_loader=val_loader, max_drop=1.0, epochs=2,
                           max_steps=3)
    history = result.history
    assert history[-1]["params"] < history[0]["params"]
    assert all(h["accuracy"] >= history[0]["accuracy"] - 1.0 for h in history)
    assert calls["evaluate"] > 1 and calls["train"] and set(calls["train"]) == {1}  # one epoch per call
    assert result.model.fc1.out_features == history[-1]["widths"]["fc1"]
    assert original.fc1.out_features == 64  # the caller's model is untouched
    soft = prunectl.soft(original, result.plan)  # the original with the searched cut masked
    assert soft.fc1.weight.shape == original.fc1.weight.shape
    assert int((soft.fc1.weight.abs().sum(1) == 0).sum()) == 64 - history[-1]["widths"]["fc1"]
    bundle = result.save(tmp_path / "out")
    assert prunectl.verify(bundle)["checksums"] == "ok"
    assert json.loads((bundle / "report.json").read_text())["auto"]["task"] == "in-process"


def test_loaders_alone_drive_the_netadapt_search(digits):
    train_loader, val_loader, _, _ = _loaders()
    result = prunectl.auto(mlp_of(digits), train_loader=train_loader, val_loader=val_loader, target_params=0.6,
                           epochs=1)
    assert result.stopped_because.startswith("target reached")
    assert result.history[-1]["params"] <= 0.6 * result.history[0]["params"]


@pytest.mark.parametrize("returned, said", [(math.nan, "not a finite number"), (math.inf, "not a finite number"),
                                            ("97%", "must return a number"), (None, "must return a number")])
def test_a_bad_evaluate_is_one_line_naming_it(digits, returned, said):
    _, val_loader, _, _ = _loaders()
    with pytest.raises(SpecError, match=said) as caught:
        prunectl.auto(mlp_of(digits), evaluate=lambda model: returned, val_loader=val_loader, epochs=0)
    assert "evaluate" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("call, said", [
    (lambda m, v: prunectl.auto("mlp.pt", val_loader=v), "expected a torch.nn.Module, got str"),
    (lambda m, v: prunectl.auto(m, epochs=0, example_inputs=torch.zeros(1, 1, 8, 8)), "pass evaluate="),
    (lambda m, v: prunectl.auto(m, epochs=0), "pass example_inputs="),
    (lambda m, v: prunectl.auto(m, evaluate=lambda model: 1.0, epochs=0, example_inputs=torch.zeros(1, 1, 8, 8)),
     "val_loader="),
    (lambda m, v: prunectl.auto(m, val_loader=v), "nothing to retrain with"),
    (lambda m, v: prunectl.auto(m, val_loader=v, epochs=0, max_dorp=1), "unknown option 'max_dorp'"),
    (lambda m, v: prunectl.auto(m, task="digits", val_loader=v), "either task= or"),
    (lambda m, v: prunectl.auto(m, val_loader=v, evaluate=42), "evaluate must be a callable"),
    (lambda m, v: prunectl.auto(torch.nn.Sequential(m), val_loader=v, epochs=0), "prunectl.auto: Sequential()"),
    (lambda m, v: prunectl.auto(m, val_loader=v, train=lambda model, epochs: None, lr=0.1), "chooses its own"),
])
def test_bad_input_is_a_one_line_error(digits, call, said):
    _, val_loader, _, _ = _loaders()
    with pytest.raises(SpecError, match=said):
        call(mlp_of(digits), val_loader)


def test_output_writes_the_bundle_at_once(digits, tmp_path):
    result = prunectl.auto(mlp_of(digits), task="digits", spec=digits / "mlp.json", max_steps=1, epochs=1,
                           output=tmp_path / "o")
    assert result.output == tmp_path / "o" and prunectl.verify(tmp_path / "o")["checksums"] == "ok"
    assert not (tmp_path / "o.auto-state").exists()
    result.save(tmp_path / "again")  # the same bundle, written again
    weights = [(tmp_path / name / "model.safetensors").read_bytes() for name in ("o", "again")]
    assert weights[0] == weights[1]
