"""Each criterion against a direct computation of its paper's formula on the same weights,
and against Torch-Pruning's implementation where it has one (when torch_pruning is installed)."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunectl.criteria import LayerView, get_criterion
from prunectl.criteria.base import Consumer
from prunectl.criteria.thinet import greedy_removal_order
from prunectl.errors import SpecError
from prunectl.loading.data import from_tensors


def conv_bn_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    with torch.no_grad():
        net[1].weight.uniform_(-1.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
        net[1].running_mean.uniform_(-0.3, 0.3)
    return net.eval()


def view_of(net: nn.Sequential, seed: int = 0) -> LayerView:
    return LayerView("0", net[0], net[1], "1", (Consumer("3", net[3]),), seed)


def score(name: str, view: LayerView, model: nn.Module | None = None, data=None) -> torch.Tensor:
    criterion = get_criterion(name)
    criterion.prepare(model, [view], data)
    return criterion.score(view)


def test_fpgm_is_the_sum_of_euclidean_distances_to_the_other_filters() -> None:
    net = conv_bn_net()
    w = net[0].weight.detach().double()
    expected = torch.tensor([sum(float(torch.linalg.vector_norm(w[i] - w[j])) for j in range(8)) for i in range(8)],
                            dtype=torch.float64)
    assert torch.allclose(score("fpgm", view_of(net)), expected, rtol=1e-10)


def test_lamp_is_squared_norm_over_the_sum_of_no_smaller_squared_norms() -> None:
    net = conv_bn_net()
    squared = net[0].weight.detach().double().flatten(1).pow(2).sum(1)
    expected = torch.tensor([float(squared[u] / squared[squared >= squared[u]].sum()) for u in range(8)],
                            dtype=torch.float64)
    scores = score("lamp", view_of(net))
    assert torch.allclose(scores, expected, rtol=1e-10)
    assert float(scores.max()) == pytest.approx(1.0)


def test_bn_scale_is_abs_gamma_and_gives_no_score_to_a_layer_without_norm() -> None:
    net = conv_bn_net()
    assert torch.equal(score("bn_scale", view_of(net)), net[1].weight.detach().double().abs())
    assert score("bn_scale", LayerView("3", net[3])) is None  # its group is left unpruned (test_bn_scale_reach)


def test_random_is_seeded_per_layer_and_uniform() -> None:
    net = conv_bn_net()
    a, b = score("random", view_of(net, seed=1)), score("random", view_of(net, seed=1))
    assert torch.equal(a, b)
    assert not torch.equal(a, score("random", view_of(net, seed=2)))
    assert not torch.equal(a, score("random", LayerView("other", net[0], seed=1)))
    assert bool(((a >= 0) & (a < 1)).all())


def calibration(count: int = 10, with_targets: bool = True):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(count, 3, 6, 6, generator=generator)
    y = torch.randint(0, 4, (count,), generator=generator) if with_targets else None
    return x, y, from_tensors(x, y, "formula data", batch_size=4)


def test_apoz_counts_zeros_after_relu_of_the_norm_output() -> None:
    net = conv_bn_net()
    x, _, data = calibration()
    with torch.no_grad():
        post_relu = F.relu(net[1](net[0](x)))
    expected = 1.0 - (post_relu == 0).double().mean(dim=(0, 2, 3))
    assert torch.allclose(score("apoz", view_of(net), net, data), expected, rtol=1e-12)


def test_taylor_is_mean_over_examples_of_abs_mean_activation_times_gradient() -> None:
    net = conv_bn_net()
    x, y, data = calibration()
    total = torch.zeros(8, dtype=torch.float64)
    for i in range(len(x)):  # per example, with the example's own loss
        activation = net[1](net[0](x[i:i + 1]))
        output = net[3](F.relu(activation)).mean(dim=(2, 3))
        (grad,) = torch.autograd.grad(F.cross_entropy(output, y[i:i + 1]), activation)
        total += (activation.detach() * grad).double().mean(dim=(2, 3)).abs()[0]
    model = nn.Sequential(net[0], net[1], net[2], net[3], nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    scores = score("taylor", view_of(net), model, data)
    assert torch.allclose(scores, total / len(x), rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())


def test_taylor_without_targets_is_a_spec_error() -> None:
    net = conv_bn_net()
    *_, data = calibration(with_targets=False)
    with pytest.raises(SpecError, match="targets"):
        score("taylor", view_of(net), net, data)


def test_thinet_greedy_order_minimises_the_reconstruction_error_at_every_step() -> None:
    generator = torch.Generator().manual_seed(5)
    contributions = torch.randn(40, 7, generator=generator, dtype=torch.float64)
    order = greedy_removal_order(contributions).tolist()
    removed: list[int] = []
    for chosen in order:  # the paper's greedy step, evaluated literally
        cost = {i: float(contributions[:, removed + [i]].sum(1).pow(2).sum()) for i in range(7) if i not in removed}
        assert cost[chosen] == pytest.approx(min(cost.values()))
        removed.append(chosen)
    assert sorted(order) == list(range(7))


def test_thinet_contributions_sum_to_the_next_layer_output() -> None:
    """A consumer whose kernel covers its whole input: one output position per example, so
    every sampled row's contributions must add up to that output minus the bias."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU(), nn.Conv2d(5, 1, 4)).eval()
    x = torch.randn(1, 3, 4, 4)
    data = from_tensors(x, None, "one example")
    criterion = get_criterion("thinet")
    view = LayerView("0", net[0], None, None, (Consumer("2", net[2]),))
    criterion.prepare(net, [view], data)
    from prunectl.criteria.thinet import _contributions

    with torch.no_grad():
        hidden = net[1](net[0](x)).double()
        rows = _contributions(Consumer("2", net[2]), hidden, 16, torch.Generator().manual_seed(0))
        expected = float(net[2](net[1](net[0](x)))[0, 0, 0, 0] - net[2].bias[0])
    assert torch.allclose(rows.sum(1), torch.full((16,), expected, dtype=torch.float64), atol=1e-5)
    scores = criterion.score(view)
    assert sorted(scores.tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]


# --- against Torch-Pruning 1.6 (the `bench` extra) -----------------------------------------

def tp_group(net: nn.Sequential):
    tp = pytest.importorskip("torch_pruning")
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=torch.randn(1, 3, 8, 8))
    return tp, graph.get_pruning_group(net[0], tp.prune_conv_out_channels, idxs=list(range(8)))


@pytest.mark.parametrize("name, p", [("l1", 1), ("l2", 2)])
def test_norms_match_torch_pruning_magnitude(name: str, p: int) -> None:
    net = conv_bn_net()
    tp, group = tp_group(net)
    theirs = tp.importance.MagnitudeImportance(p=p, normalizer=None, group_reduction="first")(group).double()
    ours = score(name, view_of(net))
    assert torch.allclose(ours if p == 1 else ours.pow(2), theirs, rtol=1e-5)  # TP's p=2 omits the root


def test_lamp_matches_torch_pruning() -> None:
    net = conv_bn_net()
    tp, group = tp_group(net)
    theirs = tp.importance.LAMPImportance(p=2, group_reduction="first")(group).double()
    assert torch.allclose(score("lamp", view_of(net)), theirs, rtol=1e-5)


def test_bn_scale_matches_torch_pruning() -> None:
    net = conv_bn_net()
    tp, group = tp_group(net)
    theirs = tp.importance.BNScaleImportance(normalizer=None)(group).double()
    assert torch.allclose(score("bn_scale", view_of(net)), theirs, rtol=1e-6)


@pytest.mark.parametrize("name, p", [("group_l1", 1), ("group_l2", 2)])
def test_group_magnitude_matches_torch_pruning_group_sum(name: str, p: int) -> None:
    """Filter rows + BatchNorm scale + the next conv's input columns, as TP sums them."""
    net = conv_bn_net()
    tp, group = tp_group(net)
    theirs = tp.importance.MagnitudeImportance(p=p, normalizer=None, group_reduction="sum")(group).double()
    ours = score(name, view_of(net))
    assert torch.allclose(ours, theirs, rtol=1e-5)


def test_group_magnitude_reads_grouped_linear_and_concatenated_consumers() -> None:
    """Each channel's columns by direct indexing: a grouped conv (2 blocks), a Linear after a
    flatten (4 features per channel) and a conv reading a concatenation at offset 3."""
    torch.manual_seed(0)
    producer = nn.Conv2d(3, 6, 1)
    grouped = nn.Conv2d(6, 4, 3, groups=2)
    flat = nn.Linear(6 * 4, 5)
    concat_reader = nn.Conv2d(3 + 6, 2, 1)
    consumers = (Consumer("g", grouped), Consumer("f", flat, factor=4),
                 Consumer("c", concat_reader, offset=3, channels=6))
    ours = score("group_l1", LayerView("p", producer, consumers=consumers))
    expected = producer.weight.detach().double().abs().flatten(1).sum(1)
    for channel in range(6):
        block, column = divmod(channel, 3)
        expected[channel] += grouped.weight.detach().double()[block * 2:(block + 1) * 2, column].abs().sum()
        expected[channel] += flat.weight.detach().double()[:, channel * 4:(channel + 1) * 4].abs().sum()
        expected[channel] += concat_reader.weight.detach().double()[:, 3 + channel].abs().sum()
    assert torch.allclose(ours, expected, rtol=1e-12)


def test_fpgm_differs_from_torch_pruning_as_documented() -> None:
    """TP measures distances between |w|^2 vectors; on those vectors the formulas agree."""
    net = conv_bn_net()
    tp, group = tp_group(net)
    theirs = tp.importance.FPGMImportance(p=2, normalizer=None, group_reduction="first")(group).double()
    squared = net[0].weight.detach().double().abs().pow(2).flatten(1)
    on_squared = torch.cdist(squared, squared).sum(1)
    assert torch.allclose(on_squared, theirs, rtol=1e-5)
    assert not torch.allclose(score("fpgm", view_of(net)), theirs, rtol=1e-3)


def test_every_pair_of_random_draws_differs_between_layers() -> None:
    net = conv_bn_net()
    draws = [score("random", LayerView(name, net[0], seed=0)) for name in ("a", "b", "c")]
    assert all(not torch.equal(a, b) for a, b in itertools.combinations(draws, 2))
