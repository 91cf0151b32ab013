"""The residual width of Swin and MaxViT through their window attention: the q/k/v projection's input
columns and the output projection's rows are cut, the heads stay whole (prunectl/window_attention*.py,
docs/decisions.md)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

import prunectl
from prunectl.cli import cli
from prunectl.errors import UnsupportedError
from prunectl.layers.window_attention import adapt_window_attention
from prunectl.layers.window_attention_modules import (
    ResidualCutRelativeAttention,
    ResidualCutWindowAttention,
    ResidualCutWindowAttentionV2,
)
from prunectl.tracing import trace_model
from tests.support import swin_models
from tests.support.swin_models import INPUT_SHAPE, ConcatIntoWindowAttention

FACTORY = "tests.support.swin_models:"
# model -> (its residual-cut attention class, one such module, the q/k/v and output projections, classifier)
MODELS = {
    "TinySwin": (ResidualCutWindowAttention, "features.3.1.attn", "qkv", "proj", "head"),
    "TinySwinV2": (ResidualCutWindowAttentionV2, "features.3.1.attn", "qkv", "proj", "head"),
    "TinyMaxVit": (ResidualCutRelativeAttention, "blocks.1.layers.0.layers.grid_attention.attn_layer.1", "to_qkv",
                   "merge", "classifier.5"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_residual_width_is_cut_through_window_attention_and_the_heads_stay_whole(name: str, tmp_path: Path) -> None:
    residual_cut, where, reader, writer, classifier = MODELS[name]
    factory = getattr(swin_models, name)
    shape = swin_models.MAXVIT_INPUT_SHAPE if name == "TinyMaxVit" else INPUT_SHAPE
    traced = trace_model(factory(), shape)
    assert list(traced.pinned) == [classifier]  # the residual stream, patch merging included, is followed
    layers = {layer.name: layer for layer in traced.spec.layers}
    assert layers[f"{where}.{reader}.weight"].dim == 1 and layers[f"{where}.{writer}"].prev == ()
    if name != "TinyMaxVit":  # patch merging: the same channels four times
        merging = layers["features.2.reduction" if name == "TinySwinV2" else "features.2.norm"]
        assert len(merging.cat) == 4 and len(set(merging.cat)) == 1
    torch.manual_seed(0)
    original = factory()
    checkpoint = tmp_path / f"{name}.pt"
    torch.save(original.state_dict(), checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(model=FACTORY + name, input_shape=shape, rate=0.5,
                                                              round_to=1, output=tmp_path / "out", onnx=True))
    assert result.report["params"]["after"] < result.report["params"]["before"]
    assert result.manifest.extra["verify"]["reference_max_abs"] > 0
    assert result.manifest.extra["onnx"]["max_abs"] <= 1e-4
    model = prunectl.load(tmp_path / "out")
    before, after = original.get_submodule(where), model.get_submodule(where)
    assert type(after) is residual_cut
    width = getattr(before, reader).in_features
    assert getattr(after, reader).weight.shape == (getattr(before, reader).out_features, width // 2)  # heads whole
    assert getattr(after, reader).in_features == getattr(after, writer).out_features == width // 2
    assert getattr(after, writer).in_features == getattr(before, writer).in_features
    x = torch.randn(2, *shape[1:])
    with torch.no_grad():
        assert torch.equal(model(x), result.model.eval()(x))
    # the bundle prunes again: the residual-cut class is traced like torchvision's
    again = prunectl.prune(tmp_path / "out", prunectl.PruneOptions(rate=0.25, round_to=1, output=tmp_path / "again"))
    assert again.report["params"]["after"] < again.report["params"]["before"]
    assert getattr(prunectl.load(tmp_path / "again").get_submodule(where), reader).in_features < width // 2


@pytest.mark.parametrize("original, residual_cut, shift", [
    (ShiftedWindowAttention, ResidualCutWindowAttention, [0, 0]),
    (ShiftedWindowAttention, ResidualCutWindowAttention, [2, 2]),
    (ShiftedWindowAttentionV2, ResidualCutWindowAttentionV2, [2, 2]),
    (RelativePositionalMultiHeadAttention, ResidualCutRelativeAttention, None),
])
def test_residual_cut_forward_is_torchvisions_when_nothing_is_cut(original, residual_cut, shift) -> None:
    torch.manual_seed(0)
    if shift is None:  # MaxViT: (batch, windows, tokens per window, channels)
        module, x = original(16, 8, 4).eval(), torch.randn(2, 3, 4, 16)
    else:  # 6x7 is padded to 8x8: the padding and the shift mask both run
        module, x = original(16, [4, 4], shift, num_heads=2).eval(), torch.randn(2, 6, 7, 16)
    with torch.no_grad():
        expected = module(x)
        adapt_window_attention(module)
        assert type(module) is original  # nothing cut: torchvision's class stays
        module.__class__ = residual_cut
        assert (module(x) - expected).abs().max() <= 1e-6
        adapt_window_attention(module)
        assert type(module) is original


def test_cutting_the_heads_is_refused_naming_the_module() -> None:
    model = nn.Sequential(ShiftedWindowAttention(16, [4, 4], [0, 0], num_heads=2))
    model[0].proj = nn.Linear(8, 16)  # proj reading fewer inputs than qkv's heads give
    with pytest.raises(UnsupportedError, match="^0: the heads of a window attention are never cut"):
        adapt_window_attention(model)


def test_cli_spec_writes_the_window_attention_entries(tmp_path: Path) -> None:
    spec_path = tmp_path / "spec.json"
    result = CliRunner().invoke(cli, ["spec", "--model", FACTORY + "TinySwin", "--input-shape", "1,3,16,16",
                                      "-o", str(spec_path)])
    assert result.exit_code == 0, result.output
    layers = json.loads(spec_path.read_text())["layers"]
    assert layers["features.3.1.attn.qkv.weight"] == {"dim": 1}
    assert layers["features.3.1.attn.proj"] == {"prev": []}


def test_window_attention_over_a_concatenation_is_exit_6_or_pinned_with_skip() -> None:
    with pytest.raises(UnsupportedError, match=r"attn \(ShiftedWindowAttention\) reads a concatenation"):
        trace_model(ConcatIntoWindowAttention(), (1, 8, 8, 3))
    traced = trace_model(ConcatIntoWindowAttention(), (1, 8, 8, 3), skip_unsupported=True)
    assert {"left", "right"} <= set(traced.pinned)
    assert "ShiftedWindowAttention" in traced.pinned["left"]


def test_a_norm_over_patch_merging_is_not_the_norm_of_the_layer_before_it(tmp_path: Path) -> None:
    # features.2.norm normalises the 4x concatenation (64 channels) of the 16-channel stream: group
    # magnitude once tried to spread its 64 scales over 16 channels (DenseNet crashed the same way)
    torch.manual_seed(0)
    checkpoint = tmp_path / "TinySwin.pt"
    torch.save(swin_models.TinySwin().state_dict(), checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(model=FACTORY + "TinySwin", input_shape=INPUT_SHAPE,
                                                              rate=0.5, output=tmp_path / "out", criterion="group_l1"))
    assert result.report["params"]["after"] < result.report["params"]["before"]
