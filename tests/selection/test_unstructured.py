"""--mode unstructured: masks equal torch.nn.utils.prune's on the same weights; made permanent;
sparsity in report and manifest; exports stay dense."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

import prunectl
from fixtures.make_checkpoints import FIXTURES, make_model
from prunectl.errors import SpecError
from prunectl.selection.unstructured import global_l1_masks, l1_mask, random_mask

SPEC = FIXTURES["vgg11_bn"][2]


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.55, 0.9])
def test_l1_mask_equals_torch_l1_unstructured(rate: float) -> None:
    model = make_model("vgg11_bn")
    for name in ("conv1", "conv5", "fc1"):
        module = copy.deepcopy(getattr(model, name))
        ours = l1_mask(module.weight.detach(), rate)
        torch_prune.l1_unstructured(module, "weight", amount=rate)
        assert torch.equal(ours, module.weight_mask), name


def test_random_mask_equals_torch_random_unstructured_for_the_same_seed() -> None:
    module = copy.deepcopy(make_model("vgg11_bn").conv3)
    ours = random_mask(module.weight.detach(), 0.4, torch.Generator().manual_seed(11))
    torch.manual_seed(11)
    torch_prune.random_unstructured(module, "weight", amount=0.4)
    assert torch.equal(ours, module.weight_mask)


def test_global_masks_equal_torch_global_unstructured() -> None:
    model = make_model("vgg11_bn")
    names = ["conv1", "conv2", "conv6", "fc1"]
    ours = global_l1_masks({n: getattr(model, n).weight.detach() for n in names}, 0.6)
    theirs = copy.deepcopy(model)
    torch_prune.global_unstructured([(getattr(theirs, n), "weight") for n in names],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.6)
    for name in names:
        assert torch.equal(ours[name], getattr(theirs, name).weight_mask), name


def test_global_unstructured_bundle_is_dense_with_torchs_zeros(checkpoints, tmp_path) -> None:
    out = tmp_path / "out"
    result = prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(
        spec=SPEC, mode="unstructured", global_ranking=True, rate=0.6, output=out))
    pruned = [layer.name for layer in prunectl.read_spec(SPEC).layers
              if layer.prunable and not layer.name.startswith("bn")]
    reference = make_model("vgg11_bn")
    torch_prune.global_unstructured([(getattr(reference, n), "weight") for n in pruned],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.6)
    for name in pruned:
        torch_prune.remove(getattr(reference, name), "weight")  # torch's way of making it permanent
    loaded = prunectl.load(out)
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key  # same shapes, same zeros
    sparsity = result.manifest.extra["sparsity"]
    assert sparsity == result.report["sparsity"]
    assert prunectl.verify(out)["checksums"] == "ok"
    assert json.loads((out / "manifest.json").read_text())["sparsity"] == sparsity  # written, not just returned
    zeros = sum(int((getattr(loaded, n).weight == 0).sum()) for n in pruned)
    assert sparsity["pruned_layers"]["zeros"] == zeros
    assert sparsity["pruned_layers"]["sparsity"] == pytest.approx(0.6, abs=1e-4)
    assert result.report["params"]["before"] == result.report["params"]["after"]
    assert "fc2" not in sparsity["layers"]  # arg: null stays dense


def test_per_layer_rates_and_exclude(checkpoints) -> None:
    result = prunectl.prune(checkpoints["small_mlp"], prunectl.PruneOptions(
        spec=FIXTURES["small_mlp"][2], mode="unstructured", criterion="l1", rate=0.25, exclude=("fc2",)))
    layers = result.report["sparsity"]["layers"]
    assert list(layers) == ["fc1"]
    assert layers["fc1"]["zeros"] == round(0.25 * layers["fc1"]["weights"])


def test_unstructured_rejects_channel_criteria_and_targets(checkpoints) -> None:
    options = dict(spec=FIXTURES["small_mlp"][2], mode="unstructured")
    with pytest.raises(SpecError, match="fpgm"):
        prunectl.prune(checkpoints["small_mlp"], prunectl.PruneOptions(criterion="fpgm", **options))
    with pytest.raises(SpecError, match="target"):
        prunectl.prune(checkpoints["small_mlp"], prunectl.PruneOptions(target_macs=0.5, **options))


def test_random_unstructured_is_seeded(checkpoints) -> None:
    def zeros(seed: int) -> dict:
        return prunectl.prune(checkpoints["small_mlp"], prunectl.PruneOptions(
            spec=FIXTURES["small_mlp"][2], mode="unstructured", criterion="random", rate=0.5, seed=seed)).model

    a, b, c = zeros(1), zeros(1), zeros(2)
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert not torch.equal(a.fc1.weight == 0, c.fc1.weight == 0)
    assert isinstance(a, nn.Module)
