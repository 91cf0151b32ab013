"""torch.nn.utils.prune interop: *_orig/*_mask checkpoints, int amounts, bias pruning, compounding
re-prunes (PruningContainer) and registry criteria in unstructured mode."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.utils.prune as torch_prune

import prunectl
from fixtures.make_checkpoints import FIXTURES, make_model
from prunectl.errors import CheckpointError, SpecError

SPEC = FIXTURES["vgg11_bn"][2]
FACTORY = FIXTURES["vgg11_bn"][0]


def _torch_pruned_checkpoint(tmp_path, amount=0.3):
    model = make_model("vgg11_bn")
    for name in ("conv1", "conv3", "fc1"):
        torch_prune.l1_unstructured(getattr(model, name), "weight", amount=amount)
    path = tmp_path / "pruned.pt"
    torch.save(model.state_dict(), path)
    return model, path


def test_cli_reads_orig_mask_pairs_folding_the_masks(tmp_path) -> None:
    model, path = _torch_pruned_checkpoint(tmp_path)
    assert "conv1.weight_orig" in torch.load(path)  # the form that used to be refused with exit 5
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "prunectl", "prune", str(path), "--spec", str(SPEC),
                           "--model", FACTORY, "--mode", "unstructured", "--rate", "0", "-o", str(out), "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = prunectl.load(out)
    for name in ("conv1", "conv3", "fc1"):
        assert torch.equal(getattr(loaded, name).weight, getattr(model, name).weight), name  # orig * mask


def test_a_broken_mask_is_one_line_exit_5(tmp_path) -> None:
    model, _ = _torch_pruned_checkpoint(tmp_path)
    state = model.state_dict()
    state["conv1.weight_mask"] = state["conv1.weight_mask"] * 0.5
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="conv1.weight_mask.*other than 0 and 1"):
        prunectl.prune(path, prunectl.PruneOptions(spec=SPEC, model=FACTORY, rate=0.1))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "prunectl", "prune", str(path), "--spec", str(SPEC),
                           "--model", FACTORY, "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 5 and len(done.stderr.strip().splitlines()) == 1 and not out.exists()


def test_int_amount_is_a_count_like_torchs(checkpoints) -> None:
    result = prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(spec=SPEC, mode="unstructured", rate=7))
    reference = make_model("vgg11_bn")
    for name, entry in result.report["sparsity"]["layers"].items():
        assert entry["zeros"] == 7, name
        module = copy.deepcopy(getattr(reference, name))
        torch_prune.l1_unstructured(module, "weight", amount=7)
        assert torch.equal(getattr(result.model, name).weight == 0, module.weight_mask == 0), name
    with pytest.raises(SpecError, match="count"):
        prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(spec=SPEC, rate=7))  # structured


def test_bias_pruning_matches_torch(checkpoints) -> None:
    result = prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(
        spec=SPEC, mode="unstructured", rate=0.5, prune_bias=True))
    reference = make_model("vgg11_bn")
    pruned = result.report["sparsity"]["biases"]
    assert pruned
    for name in pruned:
        module = copy.deepcopy(getattr(reference, name))
        torch_prune.l1_unstructured(module, "bias", amount=0.5)
        assert torch.equal(getattr(result.model, name).bias, module.bias), name


def test_re_pruning_an_unstructured_bundle_compounds_like_pruningcontainer(checkpoints, tmp_path) -> None:
    first = tmp_path / "first"
    prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(spec=SPEC, mode="unstructured", rate=0.3,
                                                                   output=first))
    second = prunectl.prune(first, prunectl.PruneOptions(spec=SPEC, mode="unstructured", rate=0.3))
    reference = make_model("vgg11_bn")
    for name, entry in second.report["sparsity"]["layers"].items():
        module = getattr(reference, name)
        torch_prune.l1_unstructured(module, "weight", amount=0.3)
        torch_prune.l1_unstructured(module, "weight", amount=0.3)  # a PruningContainer now
        assert torch.equal(getattr(second.model, name).weight == 0, module.weight_mask == 0), name
        assert entry["sparsity"] == pytest.approx(0.51, abs=0.01), name


def test_registry_criteria_score_single_weights(checkpoints) -> None:
    result = prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(
        spec=SPEC, mode="unstructured", criterion="lamp", global_ranking=True, rate=0.6))
    assert result.report["sparsity"]["pruned_layers"]["sparsity"] == pytest.approx(0.6, abs=1e-4)
    per_layer = {n: e["sparsity"] for n, e in result.report["sparsity"]["layers"].items()}
    assert len(set(per_layer.values())) > 1  # LAMP spreads a global budget unevenly over the layers
    plugin = prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(
        spec=SPEC, mode="unstructured", criterion="linf", rate=0.5))  # the digits plugin's criterion
    weight = make_model("vgg11_bn").conv2.weight.detach()
    relative = (weight.abs().flatten(1) / weight.abs().flatten(1).amax(1, keepdim=True)).view_as(weight)
    kept = plugin.model.conv2.weight != 0
    assert relative[kept].min() >= relative[~kept].max()
    with pytest.raises(SpecError, match="fpgm.*channels only"):
        prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(spec=SPEC, mode="unstructured",
                                                                       criterion="fpgm"))
