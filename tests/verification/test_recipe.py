"""The rebuild recipe (prunectl.verification.recipe): constructor args for the pruned widths, surgery
(``resize``) for the rest, and the proof that the rebuilt model is the hard-pruned one.

Each test prunes a real fixture through the pipeline's own stages (groups, per-layer selection,
plan, hard cut) and then asks the recipe functions about the result.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import SPECS

from fixtures.make_checkpoints import make_model
from prunectl.coupling.groups import build_groups
from prunectl.criteria import get_criterion
from prunectl.cut.hard import hard_prune
from prunectl.cut.plan import make_plan
from prunectl.errors import SpecError, VerificationError
from prunectl.formats.spec import Spec, read_spec
from prunectl.models import factory as factories
from prunectl.selection.per_layer import SelectOptions, select
from prunectl.verification.recipe import constructor_args, make_recipe, prove_recipe, rebuild_mismatch, resize_needed


def _spec(tmp_path: Path, name: str, **layers: dict) -> Spec:
    """The fixture's spec with some ``layers`` entries replaced, read back like any spec file."""
    data = json.loads((SPECS / f"{name}.json").read_text())
    data["layers"].update(layers)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return read_spec(path)


def _hard(spec: Spec, name: str, rate: float = 0.5) -> tuple[nn.Module, nn.Module]:
    """(original, hard-pruned) fixture ``name`` cut at ``rate`` by l1, as prune does."""
    model = make_model(name)
    groups = build_groups(spec, model)
    plan = make_plan(groups, select(groups, model, get_criterion("l1"), SelectOptions(rate=rate)))
    hard, _ = hard_prune(model, plan)
    return model, hard.eval()


def _x(spec: Spec) -> torch.Tensor:
    return torch.randn(spec.input.shape, generator=torch.Generator().manual_seed(0))


def _same_model(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].shape == sb[key].shape and torch.equal(sa[key], sb[key]), key
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_constructor_args_set_each_listed_arg_to_the_pruned_width() -> None:
    spec = read_spec(SPECS / "small_mlp.json")  # fc1 -> out_ch_fc1, fc2 -> out_ch_fc2, fc3 pinned
    _, hard = _hard(spec, "small_mlp")
    assert (hard.fc1.out_features, hard.fc2.out_features) == (32, 16)  # 64 and 32 at rate 0.5
    assert constructor_args(spec, spec.model, hard) == {"num_classes": 10, "out_ch_fc1": 32, "out_ch_fc2": 16}


def test_constructor_args_of_a_cnn_follow_its_coupled_layers() -> None:
    spec = read_spec(SPECS / "alexnet.json")
    _, hard = _hard(spec, "alexnet")
    args = constructor_args(spec, spec.model, hard)
    for layer in spec.layers:
        if layer.arg:
            module = dict(hard.named_modules())[layer.name]
            width = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            assert args[layer.arg] == width, layer.name
    assert args["num_classes"] == 10 and args["out_ch_conv1"] < 64


def test_layers_sharing_an_arg_with_different_widths_name_both(tmp_path: Path) -> None:
    _, hard = _hard(read_spec(SPECS / "small_mlp.json"), "small_mlp")  # fc1: 32, fc2: 16
    shared = _spec(tmp_path, "small_mlp", fc2={"arg": "out_ch_fc1"})
    with pytest.raises(SpecError) as info:
        constructor_args(shared, shared.model, hard)
    message = str(info.value)
    assert "layers.fc2.arg" in message and "'fc1'" in message and "'out_ch_fc1'" in message
    assert "16" in message and "32" in message and str(tmp_path / "small_mlp.json") in message


def test_an_arg_the_factory_does_not_accept_is_a_spec_error(tmp_path: Path) -> None:
    _, hard = _hard(read_spec(SPECS / "small_mlp.json"), "small_mlp")
    wrong = _spec(tmp_path, "small_mlp", fc2={"arg": "hidden_width"})
    with pytest.raises(SpecError, match=r"layers\.fc2\.arg: fixtures\.models:SmallMLP has no constructor "
                                        r"argument 'hidden_width'"):
        constructor_args(wrong, wrong.model, hard)


def test_a_layer_without_an_arg_is_rebuilt_by_surgery(tmp_path: Path) -> None:
    surgery = _spec(tmp_path, "small_mlp", fc2={})  # no "arg" key: the width is not a constructor argument
    _, hard = _hard(surgery, "small_mlp")
    args = constructor_args(surgery, surgery.model, hard)
    assert args == {"num_classes": 10, "out_ch_fc1": 32}
    rebuilt = factories.build(surgery.model.factory, args)
    resize = resize_needed(rebuilt, hard)
    assert resize == {"fc2": {"in_features": 32, "out_features": 16}, "fc3": {"in_features": 16, "out_features": 10}}
    # every width an arg: nothing left for surgery
    full = read_spec(SPECS / "small_mlp.json")
    assert resize_needed(factories.build(full.model.factory, constructor_args(full, full.model, hard)), hard) == {}


def test_resize_needed_refuses_args_that_change_the_architecture() -> None:
    _, hard = _hard(read_spec(SPECS / "small_mlp.json"), "small_mlp")
    with pytest.raises(SpecError, match="rebuilt model has no Linear named 'fc1'"):
        resize_needed(nn.Sequential(), hard)


@pytest.mark.parametrize("fc2", [{"arg": "out_ch_fc2"}, {}], ids=["args", "args+resize"])
def test_make_recipe_rebuilds_the_hard_model(fc2: dict, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "small_mlp", fc2=fc2)
    _, hard = _hard(spec, "small_mlp")
    recipe = make_recipe(spec, spec.model, hard)
    assert recipe.args == constructor_args(spec, spec.model, hard)
    assert recipe.resize == ({} if fc2 else {"fc2": {"in_features": 32, "out_features": 16},
                                              "fc3": {"in_features": 16, "out_features": 10}})
    _same_model(recipe.model, hard, _x(spec))
    assert not recipe.model.training
    # copies by default: training the bundle's model must not move the hard model
    assert recipe.model.fc1.weight.data_ptr() != hard.fc1.weight.data_ptr()
    shared = make_recipe(spec, spec.model, hard, copy_weights=False)
    assert shared.model.fc1.weight.data_ptr() == hard.fc1.weight.data_ptr()


@pytest.mark.parametrize("name", ["resnet18", "dwsep", "conv1d"])
def test_prove_recipe_on_cnn_fixtures(name: str) -> None:
    spec = read_spec(SPECS / f"{name}.json")
    original, hard = _hard(spec, name)
    x = _x(spec)
    recipe = prove_recipe(spec, spec.model, hard, x)
    _same_model(recipe.model, hard, x)
    assert sum(p.numel() for p in recipe.model.parameters()) < sum(p.numel() for p in original.parameters())
    # the recipe is what prunectl.load will do: factory(**args), then resize
    assert type(recipe.model) is type(original)


def test_rebuild_mismatch_is_none_when_the_recipe_computes_what_hard_does() -> None:
    spec = read_spec(SPECS / "vgg11_bn.json")
    _, hard = _hard(spec, "vgg11_bn")
    recipe = make_recipe(spec, spec.model, hard)
    assert rebuild_mismatch(recipe, spec.model.factory, hard, _x(spec)) is None


def test_rebuild_mismatch_reports_a_recipe_model_that_computes_something_else() -> None:
    spec = read_spec(SPECS / "vgg11_bn.json")
    _, hard = _hard(spec, "vgg11_bn")
    recipe = make_recipe(spec, spec.model, hard)
    with torch.no_grad():
        recipe.model.conv1.weight[0, 0, 0, 0] += 10.0  # one weight of the rebuilt model corrupted
    error = rebuild_mismatch(recipe, spec.model.factory, hard, _x(spec))
    assert isinstance(error, VerificationError)
    assert "fixtures.models:VGG11BN(**args) computes something else" in str(error)
    assert "check each layer's 'arg'" in str(error)
    # the hard model is untouched: the mismatch is the recipe's
    assert not torch.equal(recipe.model.conv1.weight, hard.conv1.weight)


def test_rebuild_mismatch_does_not_blame_the_recipe_when_hard_cannot_run() -> None:
    spec = read_spec(SPECS / "small_mlp.json")
    _, hard = _hard(spec, "small_mlp")
    recipe = make_recipe(spec, spec.model, hard)
    wrong_input = torch.randn(1, 5)  # neither model runs on it
    assert rebuild_mismatch(recipe, spec.model.factory, hard, wrong_input) is None
