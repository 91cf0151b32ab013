"""Swin's residual width through shifted-window attention: qkv's input columns and proj's output rows
are cut, the heads stay whole (prunectl/window_attention*.py, docs/decisions.md)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

import prunectl
from prunectl.cli import cli
from prunectl.errors import UnsupportedError
from prunectl.tracing import trace_model
from prunectl.window_attention import adapt_window_attention
from prunectl.window_attention_cut import ResidualCutWindowAttention, ResidualCutWindowAttentionV2
from tests.swin_models import INPUT_SHAPE, ConcatIntoWindowAttention, TinySwin, TinySwinV2

FACTORY = "tests.swin_models:"
MODELS = {"TinySwin": (TinySwin, ResidualCutWindowAttention), "TinySwinV2": (TinySwinV2, ResidualCutWindowAttentionV2)}


@pytest.mark.parametrize("name", list(MODELS))
def test_swin_residual_width_is_cut_and_the_heads_stay_whole(name: str, tmp_path: Path) -> None:
    factory, residual_cut = MODELS[name]
    traced = trace_model(factory(), INPUT_SHAPE)
    assert list(traced.pinned) == ["head"]  # the residual stream, patch merging included, is followed
    layers = {layer.name: layer for layer in traced.spec.layers}
    assert layers["features.1.0.attn.qkv.weight"].dim == 1 and layers["features.1.0.attn.proj"].prev == ()
    merging = layers["features.2.reduction" if name == "TinySwinV2" else "features.2.norm"]
    assert len(merging.cat) == 4 and len(set(merging.cat)) == 1  # the same channels four times
    torch.manual_seed(0)
    checkpoint = tmp_path / f"{name}.pt"
    torch.save(factory().state_dict(), checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(model=FACTORY + name, input_shape=INPUT_SHAPE, rate=0.5,
                                                              round_to=1, output=tmp_path / "out", onnx=True))
    assert result.report["params"]["after"] < result.report["params"]["before"]
    assert result.manifest.extra["verify"]["reference_max_abs"] > 0
    assert result.manifest.extra["onnx"]["max_abs"] <= 1e-4
    model = prunectl.load(tmp_path / "out")
    attention = model.features[3][1].attn
    assert type(attention) is residual_cut
    assert attention.qkv.weight.shape == (96, 16) and attention.qkv.in_features == 16  # residual 32 -> 16
    assert attention.proj.weight.shape == (16, 32) and attention.num_heads == 4  # heads: 4 x 8, whole
    assert model.features[0][0].out_channels == 8 and model.features[2].reduction.in_features == 32
    x = torch.randn(2, *INPUT_SHAPE[1:])
    with torch.no_grad():
        assert torch.equal(model(x), result.model.eval()(x))


@pytest.mark.parametrize("original, residual_cut", [(ShiftedWindowAttention, ResidualCutWindowAttention),
                                                    (ShiftedWindowAttentionV2, ResidualCutWindowAttentionV2)])
@pytest.mark.parametrize("shift", [[0, 0], [2, 2]])
def test_residual_cut_forward_is_torchvisions_when_nothing_is_cut(original, residual_cut, shift) -> None:
    torch.manual_seed(0)
    module = original(16, [4, 4], shift, num_heads=2).eval()
    x = torch.randn(2, 6, 7, 16)  # padded to 8x8: the padding and the shift mask both run
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
    with pytest.raises(UnsupportedError, match="^0: the heads of a shifted-window attention are never cut"):
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
    with pytest.raises(UnsupportedError, match=r"attn \(ShiftedWindowAttention\) reads pruned channels"):
        trace_model(ConcatIntoWindowAttention(), (1, 8, 8, 3))
    traced = trace_model(ConcatIntoWindowAttention(), (1, 8, 8, 3), skip_unsupported=True)
    assert {"left", "right"} <= set(traced.pinned)
    assert "ShiftedWindowAttention" in traced.pinned["left"]
