"""Every registered criterion (built-in or plugin) on every fixture model: the shared contract.

A criterion must give one finite float score per output channel of every scored layer, the
same scores on every run, leave the model untouched, and, when it cannot score a layer,
fail with a SpecError (exit 3) that names the layer. Data-driven ones get seeded data.
"""
from __future__ import annotations

import pytest
import torch

import prunectl
from fixtures.make_checkpoints import FIXTURES, make_model
from prunectl import registry
from prunectl.coupling.groups import build_groups
from prunectl.criteria import get_criterion
from prunectl.errors import SpecError
from prunectl.formats.spec import read_spec
from prunectl.loading.data import from_tensors
from prunectl.selection.scoring import layer_views, score_groups

CRITERIA = registry.available(registry.CRITERIA)


def calibration(spec, classes: int = 5, count: int = 16):
    generator = torch.Generator().manual_seed(7)
    shape = (count, *spec.input.shape[1:])
    return from_tensors(torch.randn(shape, generator=generator),
                        torch.randint(0, classes, (count,), generator=generator),
                        "test data", batch_size=8)


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
@pytest.mark.parametrize("criterion_name", CRITERIA)
def test_criterion_contract(criterion_name: str, fixture: str) -> None:
    spec = read_spec(FIXTURES[fixture][2])
    model = make_model(fixture)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = build_groups(spec, model)
    data = calibration(spec)
    criterion = get_criterion(criterion_name)
    assert criterion.description and len(criterion.description.splitlines()) == 1
    try:
        first = score_groups(groups, model, criterion, data, seed=3)
    except SpecError as exc:
        assert any(repr(name) in str(exc) for name in spec.layer_names), str(exc)
        assert exc.exit_code == 3
        return
    second = score_groups(groups, model, get_criterion(criterion_name), data, seed=3)
    views = layer_views(groups, model)
    for group, scores, again in zip(groups, first, second):
        if not group.prunable:
            assert scores is None
            continue
        scored = [m for m in group.members if m.scored]
        assert len(scores) == len(scored)
        for member, score, repeat in zip(scored, scores, again):
            assert member.module in views
            assert score.shape == (group.size,) and score.dtype == torch.float64
            assert bool(torch.isfinite(score).all())
            assert torch.equal(score, repeat), f"{criterion_name} is not deterministic on {member.module}"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the criterion changed the model"
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("criterion_name", CRITERIA)
def test_criterion_end_to_end_on_resnet18(criterion_name: str, checkpoints, tmp_path) -> None:
    """Through prunectl.prune with a .pt data file: a verified, smaller model naming the criterion."""
    spec = read_spec(FIXTURES["resnet18"][2])
    data = calibration(spec, classes=10)
    data_file = tmp_path / "calibration.pt"
    inputs = torch.cat([x for x, _ in data.batches])
    torch.save({"inputs": inputs, "targets": torch.cat([y for _, y in data.batches])}, data_file)
    result = prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(
        spec=FIXTURES["resnet18"][2], criterion=criterion_name, rate=0.5, data=str(data_file)))
    assert result.manifest.extra["criterion"] == criterion_name
    assert result.report["params"]["after"] < result.report["params"]["before"]
    assert result.manifest.extra["verify"]["soft_vs_hard_max_abs"] <= 1e-4
