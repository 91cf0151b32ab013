"""The soft model's norms: statistics over the kept channels only, so that soft == hard holds exactly."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.convnext import LayerNorm2d

from prunectl.cut.masked_norms import install_masked_statistic
from prunectl.verification.compare import compare


@torch.no_grad()
def test_masked_layer_norm_equals_layer_norm_over_the_kept_channels() -> None:
    torch.manual_seed(0)
    kept = torch.tensor([0, 2, 3, 7])
    for norm, x, dim in ((nn.LayerNorm(8), torch.randn(2, 5, 8) * 3 + 1, -1),
                         (LayerNorm2d(8), torch.randn(2, 8, 3, 3) * 3 + 1, 1)):
        norm.weight.normal_(), norm.bias.normal_()
        expected = F.layer_norm(x.index_select(dim, kept).movedim(dim, -1), (4,), norm.weight[kept],
                                norm.bias[kept], norm.eps).movedim(-1, dim)
        install_masked_statistic(norm, kept)
        y = norm(x)
        assert torch.allclose(y.index_select(dim, kept), expected, atol=1e-5)


@torch.no_grad()
def test_a_channels_last_layer_norm_is_the_hard_models_own_computation_and_zero_elsewhere() -> None:
    torch.manual_seed(0)
    norm = nn.LayerNorm(8)
    norm.weight.normal_(), norm.bias.normal_()  # a cut channel's shift must not leak into its output
    x = torch.randn(2, 5, 8, dtype=torch.float64) * 3 + 1
    hard = nn.LayerNorm(4).double()
    kept = torch.tensor([7, 0, 3, 2])  # as the plan may give them: unsorted
    hard.weight.copy_(norm.weight[kept.sort().values]), hard.bias.copy_(norm.bias[kept.sort().values])
    install_masked_statistic(norm.double(), kept)
    y = norm(x)
    assert torch.equal(y[..., kept.sort().values], hard(x[..., kept.sort().values]))  # bit for bit
    assert not y[..., [1, 4, 5, 6]].any()
    install_masked_statistic(norm, torch.tensor([], dtype=torch.long))
    assert not norm(x).any()


@torch.no_grad()
def test_masked_group_norm_equals_group_norm_over_the_kept_channels() -> None:
    torch.manual_seed(0)
    norm = nn.GroupNorm(2, 8)
    norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(3, 8, 4, 4) * 2 + 0.5
    kept = torch.tensor([1, 2, 4, 7])  # two per group: GroupNorm keeps num_groups
    expected = F.group_norm(x[:, kept], 2, norm.weight[kept], norm.bias[kept], norm.eps)
    install_masked_statistic(norm, kept)
    assert torch.allclose(norm(x)[:, kept], expected, atol=1e-5)


def test_soft_model_without_the_masked_statistic_would_differ() -> None:
    # guards the tests above: zeroing the cut channels alone does not make a LayerNorm agree
    torch.manual_seed(0)
    norm = nn.LayerNorm(8)
    x = torch.randn(4, 8)
    kept = torch.arange(4)
    x_soft = x.clone()
    x_soft[:, 4:] = 0
    soft = F.layer_norm(x_soft, (8,))[:, :4]
    assert not torch.allclose(soft, F.layer_norm(x[:, :4], (4,)), atol=1e-3)
    install_masked_statistic(norm, kept)
    assert torch.allclose(norm(x_soft)[:, :4], F.layer_norm(x[:, :4], (4,)), atol=1e-5)


@torch.no_grad()
def test_a_group_with_every_channel_cut_gives_zeros_and_nan_never_verifies() -> None:
    norm = nn.GroupNorm(4, 4)  # one channel per group: cutting a channel empties its group
    install_masked_statistic(norm, torch.tensor([0, 2]))
    y = norm(torch.randn(2, 4, 3, 3))
    assert bool(torch.isfinite(y).all()) and bool((y[:, [1, 3]] == 0).all())
    assert not compare([torch.zeros(3)], [torch.tensor([0.0, float("nan"), 0.0])], 1e-5, "x").ok
