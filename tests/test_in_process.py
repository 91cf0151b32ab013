"""prunectl.prune on an in-memory model: the same pipeline and bundle bytes as the CLI on the same
weights, the soft model, the user's own criterion instance and loaders, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune
from click.testing import CliRunner
from torch.utils.data import DataLoader, TensorDataset

import prunectl
from fixtures.make_checkpoints import FIXTURES, make_model
from prunectl.cli import cli
from prunectl.criteria.base import Criterion
from prunectl.errors import SpecError, UnsupportedError
from prunectl.models.inputs import make_inputs
from tests.support.helpers import manifest_without_source

INPUTS = {"mlp": (1, 784), "small_mlp": (1, 64), "alexnet": (1, 3, 32, 32), "vgg11_bn": (1, 3, 32, 32),
          "resnet18": (1, 3, 32, 32), "dwsep": (1, 3, 32, 32), "conv1d": (1, 3, 64), "normnet": (1, 3, 32, 32)}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_the_bundle_equals_the_cli_one_byte_for_byte(name: str, checkpoints, tmp_path: Path) -> None:
    spec = FIXTURES[name][2]
    assert CliRunner().invoke(cli, ["prune", str(checkpoints[name]), "--spec", str(spec), "--rate", "0.3",
                                    "-o", str(tmp_path / "cli"), "-q"]).exit_code == 0
    model = make_model(name)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    result = prunectl.prune(model, spec=spec, rate=0.3)
    assert result.output is None and not (tmp_path / "api").exists()  # nothing written until save
    result.save(tmp_path / "api")
    for file in ("model.safetensors", "model.pt", "report.json"):
        assert (tmp_path / "api" / file).read_bytes() == (tmp_path / "cli" / file).read_bytes(), file
    assert manifest_without_source(tmp_path / "api") == manifest_without_source(tmp_path / "cli")
    # the user's model is untouched (the pipeline masks its own copy)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    x = make_inputs(result.manifest.input_spec, 5, count=1, model=model)[0]
    torch.testing.assert_close(prunectl.load(tmp_path / "api")(x), result.model(x), rtol=0, atol=0)
    soft = prunectl.soft(model, result.plan)
    torch.testing.assert_close(soft.eval()(x), result.model(x), rtol=1e-4, atol=1e-4)


class Tiny(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, hidden), nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_module_without_a_spec_is_traced_on_its_example_input(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Tiny()
    result = prunectl.prune(model, example_inputs=(torch.randn(4, 12),), rate=0.5, output=tmp_path / "out")
    assert result.model.fc1.out_features == 16
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rebuild"] == {"factory": "test_in_process:Tiny", "args": {}}
    assert manifest["input"] == {"shape": [4, 12], "dtype": "float32"}
    assert manifest["source"]["path"] == "in-memory:Tiny"
    assert prunectl.load(tmp_path / "out").fc1.out_features == 16


def test_factory_args_rebuild_the_model_and_are_updated_with_the_new_width() -> None:
    torch.manual_seed(0)
    result = prunectl.prune(Tiny(hidden=40), example_inputs=torch.randn(1, 12), rate=0.5,
                            factory_args={"hidden": 40})
    # the arg that sets fc1's width holds the pruned width: Tiny(**args) loads the weights strictly
    assert result.model.fc1.out_features < 40
    assert result.manifest.rebuild["args"] == {"hidden": result.model.fc1.out_features}
    assert result.manifest.resize == {}
    Tiny(**result.manifest.rebuild["args"]).load_state_dict(result.model.state_dict(), strict=True)


def test_torch_prune_masks_on_the_model_are_folded_in_the_copy() -> None:
    torch.manual_seed(0)
    model = Tiny()
    torch_prune.l1_unstructured(model.fc1, "weight", amount=0.5)
    result = prunectl.prune(model, example_inputs=torch.randn(1, 12), rate=0.25, mode="unstructured")
    assert hasattr(model.fc1, "weight_mask")  # the user's model still carries its reparametrisation
    assert float((result.model.fc1.weight == 0).float().mean()) == pytest.approx(0.5 + 0.5 * 0.25, abs=0.01)


class LastRows(Criterion):
    """Keeps the channels with the highest index: easy to check."""

    name = "last_rows"
    description = "test criterion"

    def score(self, layer) -> torch.Tensor:
        return torch.arange(layer.module.out_features, dtype=torch.float64)


def test_a_criterion_instance_and_a_dataloader() -> None:
    torch.manual_seed(0)
    result = prunectl.prune(Tiny(), example_inputs=torch.randn(1, 12), rate=0.5, criterion=LastRows())
    assert result.manifest.kept["fc1"] == list(range(16, 32))
    assert result.manifest.extra["criterion"] == "last_rows"
    inputs, targets = torch.randn(64, 12), torch.randint(0, 3, (64,))
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=16)
    taylor = prunectl.prune(Tiny(), example_inputs=torch.randn(1, 12), rate=0.5, criterion="taylor", data=loader)
    assert taylor.model.fc1.out_features == 16
    assert taylor.manifest.extra["verify"]["data_inputs"] == 1  # the proof also ran on the user's data


def test_the_default_criterion_is_data_aware_when_data_is_given() -> None:
    torch.manual_seed(0)
    inputs, targets = torch.randn(64, 12), torch.randint(0, 3, (64,))
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=16)
    example = torch.randn(1, 12)
    with_data = prunectl.prune(Tiny(), example_inputs=example, rate=0.5, data=loader)
    assert with_data.manifest.extra["criterion"] == "activation"
    assert prunectl.prune(Tiny(), example_inputs=example, rate=0.5).manifest.extra["criterion"] == "l1"
    asked = prunectl.prune(Tiny(), example_inputs=example, rate=0.5, data=loader, criterion="l2")
    assert asked.manifest.extra["criterion"] == "l2"


@pytest.mark.parametrize(("call", "error", "fragment"), [
    (lambda: prunectl.prune([1, 2, 3]), SpecError, "expected a torch.nn.Module or a checkpoint path, got list"),
    (lambda: prunectl.prune(Tiny(), example_inputs=torch.randn(1, 12), rate=0.5, colour="red"), SpecError,
     "unknown option 'colour'"),
    (lambda: prunectl.prune(Tiny(), example_inputs=(torch.randn(1, 12), torch.randn(1, 12))), UnsupportedError,
     "one input tensor"),
    (lambda: prunectl.prune(Tiny(), example_inputs=torch.randn(1, 12), criterion="taylor",
                            data=[(torch.randn(8, 5), torch.zeros(8, dtype=torch.long))]), SpecError,
     "data: batch 0: inputs of shape [8, 5] do not fit the model's input [1, 12]"),
    (lambda: prunectl.prune(Tiny(), example_inputs=torch.randn(1, 12), rate="half"), SpecError,
     "--rate: expected a number, got str 'half'"),
    (lambda: prunectl.prune(Tiny(), example_inputs=torch.randn(1, 12), criterion=3), SpecError,
     "criterion: expected a name or a prunectl Criterion instance, got int"),
    (lambda: prunectl.prune(Tiny(), example_inputs=torch.randn(1, 12), data=[]), SpecError, "no batches"),
    (lambda: prunectl.soft(Tiny(), {"fc9": None}), SpecError, "plan must be the plan of a PruneResult"),
    (lambda: prunectl.prune(nn.Sequential(nn.Linear(12, 8), nn.Linear(8, 3)), example_inputs=torch.randn(1, 12)),
     SpecError, "Sequential() does not rebuild this model"),
])
def test_bad_input_is_one_clear_error(call, error, fragment: str, tmp_path: Path) -> None:
    with pytest.raises(error) as raised:
        call()
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_soft_refuses_another_model() -> None:
    torch.manual_seed(0)
    result = prunectl.prune(Tiny(), example_inputs=torch.randn(1, 12), rate=0.5)
    with pytest.raises(SpecError, match="has no layer 'fc1'"):
        prunectl.soft(nn.Sequential(nn.Linear(12, 3)), result.plan)
