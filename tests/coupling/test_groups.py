"""Coupling rules: residual sums, norms, depthwise/grouped convs, flatten, pins, rounding."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import SPECS, prune_case

import prunectl
from prunectl.coupling.groups import build_groups
from prunectl.errors import SpecError
from prunectl.formats.spec import read_spec


def _prune(checkpoints, name: str, tmp_path: Path, **options) -> prunectl.PruneResult:
    return prunectl.prune(checkpoints[name], prunectl.PruneOptions(spec=SPECS / f"{name}.json", **options))


def test_residual_sum_members_keep_identical_indices(checkpoints, tmp_path: Path) -> None:
    kept = _prune(checkpoints, "resnet18", tmp_path).manifest.kept
    stage1 = ["conv1", "bn1", "layer1.0.conv2", "layer1.0.bn2", "layer1.1.conv2", "layer1.1.bn2"]
    assert all(kept[name] == kept["conv1"] for name in stage1)
    stage2 = ["layer2.0.conv2", "layer2.0.bn2", "layer2.0.shortcut.0", "layer2.0.shortcut.1", "layer2.1.conv2"]
    assert all(kept[name] == kept["layer2.0.conv2"] for name in stage2)
    assert kept["layer1.0.conv1"] != kept["conv1"]  # inside a block: free
    assert len(kept["conv1"]) == 8


def test_groups_of_resnet18_follow_the_prev_sums() -> None:
    from fixtures.models import ResNet18

    groups = build_groups(read_spec(SPECS / "resnet18.json"), ResNet18())
    stem = next(g for g in groups if "conv1" in g.layers)
    assert {"bn1", "layer1.0.bn2", "layer1.1.bn2"} <= set(stem.layers)
    fc_inputs = [m for g in groups for m in g.members if m.module == "fc"]
    assert sorted(m.side for m in fc_inputs) == ["in", "out"]
    fc_output = next(g for g in groups if "fc" in g.layers)
    assert not fc_output.prunable and fc_output.pinned_by == ["fc: arg: null"]


def test_depthwise_conv_follows_its_input(checkpoints, tmp_path: Path) -> None:
    result = _prune(checkpoints, "dwsep", tmp_path)
    kept = result.manifest.kept
    assert kept["dw1"] == kept["conv1"] == kept["bn_dw1"]
    assert kept["dw2"] == kept["pw1"]
    assert result.model.dw1.groups == result.model.dw1.in_channels == len(kept["conv1"])


def test_linear_after_flatten_loses_whole_channels(checkpoints, tmp_path: Path) -> None:
    result = _prune(checkpoints, "alexnet", tmp_path)
    conv5 = result.model.conv5.out_channels
    assert result.model.fc1.in_features == conv5 * 4  # 2x2 spatial positions per channel


def test_per_layer_rate_and_prune_false(checkpoints, tmp_path: Path) -> None:
    alex = _prune(checkpoints, "alexnet", tmp_path).report["layers"]
    widths = {layer["name"]: (layer["before"], layer["after"]) for layer in alex}
    assert widths["conv2"] == (192, 192 - int(192 * 0.3))
    vgg = _prune(checkpoints, "vgg11_bn", tmp_path).report["layers"]
    assert {layer["name"]: layer["after"] for layer in vgg}["conv1"] == 32


def test_grouped_conv_keeps_equal_counts_per_block(tmp_path: Path) -> None:
    layers = {"conv1": {}, "bn1": {}, "conv2": {}, "bn2": {}, "conv3": {}, "fc": {"arg": None}}
    result = prune_case(tmp_path, "fixtures.synthetic:GroupedConvNet", layers, [2, 3, 8, 8], rate=0.5)
    conv2 = result.model.conv2
    assert conv2.groups == 4 and conv2.in_channels == 8 and conv2.out_channels == 16
    for name, block in (("conv1", 4), ("conv2", 8)):
        kept = torch.tensor(result.manifest.kept[name])
        assert torch.bincount(kept // block).tolist() == [len(kept) // 4] * 4


def test_depthwise_multiplier_keeps_output_pairs(tmp_path: Path) -> None:
    layers = {"conv1": {}, "dw": {}, "bn": {}, "pw": {}, "fc": {"arg": None}}
    result = prune_case(tmp_path, "fixtures.synthetic:DepthwiseMultiplierNet", layers, [1, 3, 4, 4], rate=0.5)
    conv1, dw = result.manifest.kept["conv1"], result.manifest.kept["dw"]
    assert dw == [2 * c + t for c in conv1 for t in (0, 1)]
    assert result.model.fc.in_features == 6 * 16


def test_conv_transpose_and_affine_free_norm(tmp_path: Path) -> None:
    layers = {"down": {}, "norm": {}, "up": {}, "head": {"arg": None}}
    result = prune_case(tmp_path, "fixtures.synthetic:TransposeNet", layers, [1, 3, 8, 8], rate=0.5)
    assert result.model.up.in_channels == 6 and result.model.up.out_channels == 3
    assert result.manifest.resize["up"] == {"in_channels": 6, "out_channels": 3, "groups": 1}


def test_union_reduction_keeps_at_least_the_target(checkpoints, tmp_path: Path) -> None:
    mean = _prune(checkpoints, "resnet18", tmp_path).manifest.kept
    union = _prune(checkpoints, "resnet18", tmp_path, group_reduce="union").manifest.kept
    assert len(union["conv1"]) >= len(mean["conv1"])
    assert len(union["layer1.0.conv1"]) == len(mean["layer1.0.conv1"])  # single-member group


def test_round_to_and_min_channels(checkpoints, tmp_path: Path) -> None:
    result = _prune(checkpoints, "vgg11_bn", tmp_path, rate=0.9, round_to=8, min_channels=16)
    for layer in result.report["layers"]:
        if layer["name"].startswith("conv") and layer["name"] != "conv1":
            assert layer["after"] % 8 == 0 and layer["after"] >= 16


def test_rate_zero_changes_nothing(checkpoints, tmp_path: Path) -> None:
    result = _prune(checkpoints, "small_mlp", tmp_path, rate=0.0)
    assert result.manifest.kept == {} and result.report["params"]["ratio"] == 1.0


def test_layers_sharing_an_arg_must_be_coupled(tmp_path: Path) -> None:
    spec = json.loads((SPECS / "small_mlp.json").read_text())
    spec["layers"]["fc2"]["arg"] = spec["layers"]["fc1"]["arg"]
    from fixtures.models import SmallMLP

    ckpt = tmp_path / "m.pt"
    torch.save(SmallMLP().state_dict(), ckpt)
    (tmp_path / "s.json").write_text(json.dumps(spec))
    with pytest.raises(SpecError, match="layers sharing an arg must be coupled"):
        prunectl.prune(ckpt, prunectl.PruneOptions(spec=tmp_path / "s.json", rate=0.3))


def test_wrong_layer_order_names_the_layer(tmp_path: Path) -> None:
    layers = {"conv1": {}, "conv3": {}, "bn1": {}, "conv2": {}, "bn2": {}, "fc": {"arg": None}}
    with pytest.raises(SpecError, match=r"layers\.conv3: takes 32 input channels, but the layer before it"):
        prune_case(tmp_path, "fixtures.synthetic:GroupedConvNet", layers, [1, 3, 8, 8])


def test_unlisted_norm_layer_is_caught(tmp_path: Path) -> None:
    layers = {"conv1": {}, "conv2": {}, "bn2": {}, "conv3": {}, "fc": {"arg": None}}
    with pytest.raises(prunectl.VerificationError, match="first diverging layer: bn1|conv2"):
        prune_case(tmp_path, "fixtures.synthetic:GroupedConvNet", layers, [1, 3, 8, 8])


def test_vanishing_output_does_not_hide_a_divergence(tmp_path: Path) -> None:
    layers = {"conv1": {}, "conv2": {}, "fc": {"arg": None}}
    with pytest.raises(prunectl.VerificationError, match="differ at layer conv2"):
        prune_case(tmp_path, "fixtures.synthetic:ChannelMeanNet", layers, [1, 3, 8, 8], rate=0.5)
