"""What prunectl knows about each module kind (layers/kinds.py): kinds, widths, dims, resizing."""
from __future__ import annotations

import pytest
import torch.nn as nn

from prunectl.errors import SpecError, UnsupportedError
from prunectl.layers import kinds as L
from prunectl.layers.attention import ResidualCutMultiheadAttention

KINDS = [
    (nn.Conv2d(4, 8, 3), "conv", 8, 4, {"weight": 0, "bias": 0}),
    (nn.ConvTranspose2d(4, 8, 3), "conv", 8, 4, {"weight": 1, "bias": 0}),
    (nn.Conv1d(4, 6, 1, bias=False), "conv", 6, 4, {"weight": 0}),
    (nn.Linear(5, 7), "linear", 7, 5, {"weight": 0, "bias": 0}),
    (nn.BatchNorm2d(6), "norm", 6, 6, {"weight": 0, "bias": 0, "running_mean": 0, "running_var": 0}),
    (nn.LayerNorm(6), "norm", 6, 6, {"weight": 0, "bias": 0}),
    (nn.GroupNorm(2, 6), "norm", 6, 6, {"weight": 0, "bias": 0}),
    (nn.PReLU(6), "norm", 6, 6, {"weight": 0}),
    (nn.Embedding(10, 6), "embedding", 6, None, {"weight": 1}),
    (nn.MultiheadAttention(8, 2), "attention", 24, 8, {"in_proj_weight": 0, "in_proj_bias": 0}),
]


@pytest.mark.parametrize("module, kind, out, inp, dims", KINDS, ids=lambda v: type(v).__name__ if isinstance(
    v, nn.Module) else None)
def test_kind_widths_and_channel_dims(module, kind, out, inp, dims) -> None:
    assert L.kind_of(module) == kind
    assert L.out_width(module) == out
    if inp is not None:
        assert L.in_width(module) == inp
    assert L.out_dims(module) == dims


@pytest.mark.parametrize("module", [nn.ReLU(), nn.PReLU(), nn.LayerNorm((4, 4)), nn.Sequential(),
                                    nn.MultiheadAttention(8, 2, kdim=4, vdim=4)])
def test_what_is_not_a_layer_is_other(module) -> None:
    # a single-slope PReLU, a LayerNorm over two dims is a 'norm' refused by check_supported, separate q/k/v
    kind = L.kind_of(module)
    assert kind in ("other", "norm")
    if kind == "other":
        with pytest.raises(UnsupportedError, match="no channel width"):
            L.out_width(module)


def test_layer_norm_over_two_dims_is_refused_with_the_fix() -> None:
    with pytest.raises(UnsupportedError, match=r"LayerNorm over 2 dims \(4, 4\).*\"prune\": false"):
        L.check_supported("ln", nn.LayerNorm((4, 4)))


def test_channel_dim_follows_the_memory_layout() -> None:
    assert L.channel_dim(nn.Linear(4, 4), 3) == 2
    assert L.channel_dim(nn.LayerNorm(4), 4) == 3  # nn.LayerNorm normalises the last dim
    assert L.channel_dim(nn.Conv2d(4, 4, 1), 4) == 1
    assert L.channel_dim(nn.BatchNorm1d(4), 3) == 1


def test_depthwise_transposed_and_group_norm_blocks() -> None:
    assert L.is_depthwise(nn.Conv2d(8, 16, 3, groups=8)) and not L.is_depthwise(nn.Conv2d(8, 16, 3, groups=2))
    assert L.is_transposed(nn.ConvTranspose1d(2, 2, 1)) and not L.is_transposed(nn.Conv1d(2, 2, 1))
    assert L.norm_blocks(nn.GroupNorm(3, 12)) == 3
    assert L.norm_blocks(nn.GroupNorm(12, 12)) == 1  # one channel per group: the groups go with the channels
    assert L.statistic(nn.GroupNorm(3, 12)) == "group" and L.statistic(nn.LayerNorm(4)) == "layer"
    assert L.statistic(nn.BatchNorm2d(4)) is None


@pytest.mark.parametrize("module, new_out, new_in, expected", [
    (nn.Conv2d(8, 16, 3), 12, 6, {"in_channels": 6, "out_channels": 12, "groups": 1}),
    (nn.Conv2d(8, 8, 3, groups=8), 6, 6, {"in_channels": 6, "out_channels": 6, "groups": 6}),
    (nn.Linear(8, 4), None, 5, {"in_features": 5, "out_features": 4}),
    (nn.GroupNorm(6, 6), 4, None, {"num_channels": 4, "num_groups": 4}),
    (nn.GroupNorm(2, 6), 4, None, {"num_channels": 4, "num_groups": 2}),
    (nn.LayerNorm(6), 3, None, {"normalized_shape": 3}),
    (nn.Embedding(10, 6), 4, None, {"num_embeddings": 10, "embedding_dim": 4}),
    (nn.MultiheadAttention(8, 2), 12, 6, {"embed_dim": 4, "num_heads": 1, "kdim": 6, "vdim": 6}),
])
def test_resized_attrs_then_apply_attrs_reallocate_every_tensor(module, new_out, new_in, expected) -> None:
    attrs = L.resized_attrs(module, new_out, new_in)
    assert attrs == expected
    L.apply_attrs(module, attrs, "resize.m")
    assert L.shape_attrs(module) == expected
    for name, dim in L.out_dims(module).items():
        assert getattr(module, name).shape[dim] == (new_out if new_out is not None else L.out_width(module))
    if new_in is not None and L.kind_of(module) in ("conv", "linear", "attention"):
        assert L.in_width(module) == new_in


def test_apply_attrs_refuses_unknown_attributes_and_indivisible_groups() -> None:
    with pytest.raises(SpecError, match="has no resizable attribute 'padding'"):
        L.apply_attrs(nn.Conv2d(4, 4, 1), {"padding": 1}, "resize.c")
    with pytest.raises(SpecError, match="not divisible by groups=2"):
        L.apply_attrs(nn.Conv2d(4, 4, 1, groups=2), {"out_channels": 3}, "resize.c")
    with pytest.raises(SpecError, match=r"resize\.c\.out_channels: expected a positive integer, got True"):
        L.apply_attrs(nn.Conv2d(4, 4, 1), {"out_channels": True}, "resize.c")


def test_zero_width_and_max_norm_embeddings_are_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="zero-sized dimension"):
        L.check_supported("fc", nn.Linear(4, 0))
    with pytest.raises(UnsupportedError, match="max_norm"):
        L.check_supported("emb", nn.Embedding(4, 4, max_norm=1.0))


def test_a_residual_cut_attention_is_still_an_attention() -> None:
    attention = nn.MultiheadAttention(8, 2)
    attention.__class__ = ResidualCutMultiheadAttention
    assert L.kind_of(attention) == "attention" and L.weight_name(attention) == "in_proj_weight"
    assert L.weight_of(attention) is attention.in_proj_weight
