"""transformers' Conv1D (GPT-2's ``y = x @ W + b``, weight [in, out]) is a layer of kind 'linear':
the same cut, mask, resize and scores as an nn.Linear holding the transposed weight."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunectl.criteria.base import Consumer, LayerView
from prunectl.cut.hard import hard_prune
from prunectl.cut.plan import ModuleCut
from prunectl.cut.soft import soft_prune
from prunectl.layers import kinds as L
from prunectl.layers.resize import apply_resize

Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D


class TwoConv1D(nn.Module):
    """GPT-2's MLP shape: c_fc (8 -> 12), a nonlinearity, c_proj (12 -> 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.c_fc = Conv1D(12, 8)
        self.c_proj = Conv1D(8, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(torch.relu(self.c_fc(x)))


def _model() -> TwoConv1D:
    torch.manual_seed(0)
    model = TwoConv1D().double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Conv1D):
                module.bias.normal_()
    return model


def test_conv1d_is_a_linear_with_the_axes_swapped() -> None:
    conv = Conv1D(12, 8)
    assert L.kind_of(conv) == "linear"
    assert (L.out_width(conv), L.in_width(conv)) == (12, 8)
    assert L.out_dims(conv) == {"weight": 1, "bias": 0}
    assert L.in_dim(conv) == 0
    assert L.channel_dim(conv, 3) == 2
    assert L.shape_attrs(conv) == {"nx": 8, "nf": 12}
    assert L.resized_attrs(conv, 5, 3) == {"nx": 3, "nf": 5}
    linear = nn.Linear(8, 12)
    assert (L.out_dims(linear), L.in_dim(linear)) == ({"weight": 0, "bias": 0}, 1)


def test_hard_cut_equals_soft_mask_and_keeps_the_kept_columns() -> None:
    model = _model()
    kept = torch.tensor([0, 3, 4, 9, 11])
    plan = {"c_fc": ModuleCut(out=kept), "c_proj": ModuleCut(inp=kept)}
    hard, attrs = hard_prune(model, plan)
    assert attrs == {"c_fc": {"nx": 8, "nf": 5}, "c_proj": {"nx": 5, "nf": 8}}
    assert hard.c_fc.weight.shape == (8, 5) and hard.c_fc.bias.shape == (5,)
    assert hard.c_proj.weight.shape == (5, 8)
    assert torch.equal(hard.c_fc.weight, model.c_fc.weight[:, kept])
    assert torch.equal(hard.c_proj.weight, model.c_proj.weight[kept])
    soft = soft_prune(model, plan)
    dropped = [i for i in range(12) if i not in kept.tolist()]
    assert not soft.c_fc.weight[:, dropped].any() and not soft.c_proj.weight[dropped].any()
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    torch.testing.assert_close(hard(x), soft(x), rtol=1e-12, atol=1e-12)


def test_resize_replays_the_cut_on_a_fresh_build() -> None:
    hard, attrs = hard_prune(_model(), {"c_fc": ModuleCut(out=torch.tensor([1, 2])),
                                        "c_proj": ModuleCut(inp=torch.tensor([1, 2]))})
    fresh = TwoConv1D().double()
    apply_resize(fresh, attrs)
    fresh.load_state_dict(hard.state_dict())
    x = torch.randn(4, 8, dtype=torch.float64)
    assert torch.equal(fresh(x), hard(x))
    assert (fresh.c_fc.nf, fresh.c_proj.nx) == (2, 2)


def test_scores_see_one_row_per_output_channel() -> None:
    model = _model()
    view = LayerView("c_fc", model.c_fc, consumers=(Consumer("c_proj", model.c_proj),))
    assert torch.equal(view.out_channel_weights(), model.c_fc.weight.t().double())
    reader = view.consumers[0]
    torch.testing.assert_close(reader.power_per_input(1), model.c_proj.weight.abs().sum(1).double())
