"""MACs/params targets: the bisection reaches them, and the cost model equals what is measured after the cut."""
from __future__ import annotations

import pytest
import torch

import prunectl
from fixtures.make_checkpoints import FIXTURES, make_model
from prunectl.coupling.groups import build_groups
from prunectl.criteria import get_criterion
from prunectl.cut.hard import hard_prune
from prunectl.cut.plan import make_plan
from prunectl.errors import SpecError
from prunectl.formats.spec import read_spec
from prunectl.selection.budget import CostModel, measure
from prunectl.selection.per_layer import SelectOptions, select
from prunectl.tracing import trace_model
from tests.support.layer_kind_models import TinyViT

RESNET = FIXTURES["resnet18"][2]


@pytest.mark.parametrize("kind, global_ranking", [("macs", True), ("params", True), ("macs", False)])
def test_target_is_reached_within_one_percent(kind: str, global_ranking: bool, checkpoints) -> None:
    result = prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(
        spec=RESNET, global_ranking=global_ranking, **{f"target_{kind}": 0.5}))
    target = result.report["target"]
    assert target["kind"] == kind and target["within_1_percent"]
    assert result.report[kind]["ratio"] == pytest.approx(0.5, rel=0.01)
    assert result.manifest.extra["target"] == target
    assert result.manifest.to_json()["target"] == target and "selection" in result.manifest.to_json()


def test_unreachable_target_is_a_spec_error(checkpoints) -> None:
    with pytest.raises(SpecError, match="unreachable"):
        prunectl.prune(checkpoints["small_mlp"], prunectl.PruneOptions(
            spec=FIXTURES["small_mlp"][2], target_params=0.01, min_channels=8))


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_cost_estimate_equals_flop_counter_and_param_count(fixture: str) -> None:

    spec = read_spec(FIXTURES[fixture][2])
    model = make_model(fixture)
    x = torch.randn(spec.input.shape, generator=torch.Generator().manual_seed(0))
    groups = build_groups(spec, model)
    plan = make_plan(groups, select(groups, model, get_criterion("l2"), SelectOptions(rate=0.37)))
    pruned, _ = hard_prune(model, plan)
    for kind in ("macs", "params"):
        baseline = measure(model, x, kind)
        assert CostModel(model, x, kind, baseline)(plan) == pytest.approx(measure(pruned, x, kind) / baseline, rel=1e-9)


def test_cost_estimate_counts_attention_heads_exactly() -> None:

    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(1, 3, 32, 32)
    groups = build_groups(trace_model(model, tuple(x.shape)).spec, model)
    plan = make_plan(groups, select(groups, model, get_criterion("l1"), SelectOptions(rate=0.5)))
    assert "encoder.layers.encoder_layer_0.self_attention" in plan
    pruned, _ = hard_prune(model, plan)
    for kind in ("macs", "params"):
        baseline = measure(model, x, kind)
        assert CostModel(model, x, kind, baseline)(plan) == pytest.approx(measure(pruned, x, kind) / baseline, rel=1e-9)
