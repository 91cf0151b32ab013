"""The Pruner in hand-written training loops: masks equal torch.nn.utils.prune's, every schedule
reaches its sparsities, cut weights stay cut through optimizer steps, lottery tickets rewind,
a mid-training state_dict loads in prunectl, and bad input is one SpecError line."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

from prunectl.criteria.base import get_criterion
from prunectl.errors import SpecError
from prunectl.hooks import Pruner, agp, layer_by_layer, linear, lottery, lottery_rounds, one_shot
from prunectl.loading.state_dict import validate_state_dict

LAYERS = ("0", "2", "4")


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def _data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 16, generator=generator)
    return x, (x[:, :4] * 3).argmax(dim=1)


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5) -> float:
    x, y = _data()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


@pytest.mark.parametrize("global_ranking", [False, True])
def test_one_shot_l1_masks_equal_torchs(global_ranking: bool) -> None:
    model, reference = _mlp(), _mlp()
    Pruner(model, one_shot(0.6), global_ranking=global_ranking).step(0)
    pairs = [(reference[int(name)], "weight") for name in LAYERS]
    if global_ranking:
        torch_prune.global_unstructured(pairs, pruning_method=torch_prune.L1Unstructured, amount=0.6)
    else:
        for module, name in pairs:
            torch_prune.l1_unstructured(module, name, amount=0.6)
    for name in LAYERS:
        assert torch.equal(model[int(name)].weight_mask, reference[int(name)].weight_mask), name


def test_agp_reaches_its_targets_in_a_training_loop_and_cut_weights_stay_cut() -> None:
    model = _mlp()
    schedule = agp(0.8, start=1, end=4)
    pruner = Pruner(model, schedule)
    optimizer = _sgd(model)  # made after the Pruner: it updates weight_orig, the mask keeps the zeros
    reached = []
    for epoch in range(6):
        _train(model, optimizer)
        if pruner.step(epoch):
            reached.append(pruner.sparsity()["0.weight"])
    targets = [event.target for event in schedule]
    assert reached == pytest.approx(targets, abs=1 / 512) and targets[0] == 0.0 and targets[-1] == 0.8
    assert targets[2] - targets[1] > targets[3] - targets[2]  # fast first, slow at the end
    _train(model, optimizer)
    masks = {name: model[int(name)].weight_mask.clone() for name in LAYERS}
    finished = pruner.finish()
    for name in LAYERS:
        weight = finished[int(name)].weight
        assert isinstance(weight, nn.Parameter) and not hasattr(finished[int(name)], "weight_orig")
        assert torch.equal(weight == 0, masks[name] == 0), name  # momentum and weight decay revived nothing
        assert int((weight == 0).sum()) == round(0.8 * weight.nelement())


def test_linear_and_layer_by_layer_schedules() -> None:
    model = _mlp()
    pruner = Pruner(model, linear(0.5, start=0, end=4, every=2))
    for epoch in range(5):
        pruner.step(epoch)
        if epoch in (0, 2, 4):
            assert pruner.sparsity()["total"] == pytest.approx(0.5 * (epoch // 2 + 1) / 3, abs=1e-3)
    model = _mlp()
    pruner = Pruner(model, layer_by_layer(0.5, ["4", "2", "0"]))
    optimizer = _sgd(model)
    seen = []
    for epoch in range(3):
        _train(model, optimizer)
        pruner.step(epoch)
        seen.append({name for name in LAYERS if pruner.sparsity()[f"{name}.weight"] > 0})
    assert seen == [{"4"}, {"4", "2"}, {"4", "2", "0"}]


def test_lottery_ticket_rewinds_the_survivors_to_init_and_compounds() -> None:
    model = _mlp()
    initial = copy.deepcopy(model.state_dict())
    pruner = Pruner(model, lottery(0.4, rounds=3, every=2))
    optimizer = _sgd(model)
    for epoch in range(6):
        _train(model, optimizer)
        if pruner.step(epoch):
            for key, value in initial.items():
                live = model.get_parameter(key.replace("weight", "weight_orig")) if key.endswith("weight") \
                    else model.get_parameter(key)
                assert torch.equal(live, value), key  # every parameter back at its initial value
    assert pruner.sparsity()["total"] == pytest.approx(1 - 0.6 ** 3, abs=1e-3)
    assert lottery_rounds(0.8, 0.2) == 8 and 1 - 0.8 ** 8 >= 0.8 > 1 - 0.8 ** 7


def test_rewinding_to_an_early_epoch_takes_the_weights_after_that_epoch() -> None:
    model = _mlp()
    pruner = Pruner(model, lottery(0.5, rounds=1, start=3), rewind=1)
    optimizer = _sgd(model)
    for epoch in range(4):
        _train(model, optimizer)
        if epoch == 1:
            after_epoch_1 = {k: v.clone() for k, v in model.state_dict().items()}
        pruner.step(epoch)
    assert torch.equal(model[2].bias, after_epoch_1["2.bias"])
    assert torch.equal(model[2].weight_orig, after_epoch_1["2.weight"])


def test_a_mid_training_state_dict_loads_in_prunectl_and_resumes() -> None:
    model = _mlp()
    pruner = Pruner(model, agp(0.7, start=0, end=3))
    optimizer = _sgd(model)
    for epoch in range(2):
        _train(model, optimizer)
        pruner.step(epoch)
    saved = model.state_dict()
    assert "0.weight_orig" in saved and "0.weight_mask" in saved
    folded = validate_state_dict(saved, "mid.pt")
    assert torch.equal(folded["0.weight"], model[0].weight_orig * model[0].weight_mask)
    resumed_model = _mlp(seed=5)
    resumed = Pruner(resumed_model, agp(0.7, start=0, end=3))
    resumed.load_state_dict(pruner.state_dict())
    resumed_model.load_state_dict(saved)  # a fresh model takes the masked state_dict once a Pruner is on it
    assert torch.equal(resumed_model[0].weight_mask, model[0].weight_mask)
    assert resumed.step(1) is False  # already done before the checkpoint
    assert resumed.step(2) is True


def test_criteria_from_the_registry_and_instances() -> None:
    model = _mlp()
    Pruner(model, one_shot(0.5), criterion="lamp", global_ranking=True).step(0)
    per_layer = [float((model[int(n)].weight_mask == 0).float().mean()) for n in LAYERS]
    assert len(set(per_layer)) > 1 and sum(per_layer) > 0  # LAMP spreads the global budget unevenly
    model, reference = _mlp(), _mlp()
    Pruner(model, one_shot(0.3), criterion=get_criterion("l2")).step(0)  # an instance, not a name
    Pruner(reference, one_shot(0.3)).step(0)
    assert all(torch.equal(model[int(n)].weight_mask, reference[int(n)].weight_mask) for n in LAYERS)  # |w| both


def test_bad_input_is_one_spec_error_line() -> None:
    with pytest.raises(SpecError, match="must be a torch.nn.Module, got dict"):
        Pruner({"weight": torch.ones(2)}, one_shot(0.5))
    with pytest.raises(SpecError, match=r"amount: expected a fraction in \[0, 1\), got 1.5"):
        one_shot(1.5)
    with pytest.raises(SpecError, match="names layer '9'"):
        Pruner(_mlp(), layer_by_layer(0.5, ["9"]))
    with pytest.raises(SpecError, match="fpgm.*channels only"):
        Pruner(_mlp(), one_shot(0.5), criterion="fpgm")
    with pytest.raises(SpecError, match="rewind epoch 4 comes after"):
        Pruner(_mlp(), lottery(0.5, rounds=2, start=2), rewind=4)
    with pytest.raises(SpecError, match="has no module 'head'"):
        Pruner(_mlp(), one_shot(0.5), parameters=["head.weight"])
    with pytest.raises(SpecError, match="end: epoch 1 is before start 3"):
        agp(0.5, start=3, end=1)
