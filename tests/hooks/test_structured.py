"""The Pruner in structured mode, in real training loops on the digits data: every event runs the
pipeline on the masked model, cut channels stay cut through optimizer steps and later events, the
masked model computes what the hard-pruned one does, and the bundle loads back."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import prunectl
from prunectl.cut.plan import kept_by_layer
from prunectl.errors import SpecError
from prunectl.hooks import Pruner, agp, layer_by_layer, lottery, one_shot
from prunectl_digits.models import DigitsCNN
from prunectl_digits.task import splits

CONVS = {"conv1": 16, "conv2": 32, "fc1": 64}  # DigitsCNN's prunable widths


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    inputs, targets = splits()["train"]
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(epoch))
    model.train()
    for idx in order.split(64):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs[idx]), targets[idx]).backward()
        optimizer.step()


def _accuracy(model: nn.Module) -> float:
    inputs, targets = splits()["test"]
    with torch.no_grad():
        return float((model.eval()(inputs).argmax(1) == targets).float().mean())


def _example() -> torch.Tensor:
    return splits()["train"][0][:2]


def _fit(pruner_options: dict, schedule: list, epochs: int, seed: int = 0) -> tuple[nn.Module, Pruner, list]:
    torch.manual_seed(seed)
    model = DigitsCNN()
    pruner = Pruner(model, schedule, mode="structured", example_inputs=_example(), **pruner_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    plans = []
    for epoch in range(epochs):
        _train_epoch(model, optimizer, epoch)
        if pruner.step(epoch) and pruner.channels.plan:  # (an AGP schedule's first event, at 0, cuts nothing)
            plans.append(kept_by_layer(pruner.channels.plan))
    return model, pruner, plans


def _widths(model: nn.Module) -> dict[str, int]:
    return {"conv1": model.conv1.out_channels, "conv2": model.conv2.out_channels, "fc1": model.fc1.out_features}


def test_agp_cuts_channels_for_good_and_the_hard_model_equals_the_masked_one(tmp_path: Path) -> None:
    schedule = agp(0.5, start=1, end=4)
    model, pruner, plans = _fit({}, schedule, epochs=6)
    assert len(plans) == len([event for event in schedule if event.target > 0])
    for before, after in zip(plans, plans[1:]):  # a later event cuts a superset
        assert all(set(after[name]) <= set(before.get(name, range(CONVS.get(name[-1:], 999)))) for name in after)
    assert {name: len(plans[-1][name]) for name in CONVS} == {"conv1": 8, "conv2": 16, "fc1": 32}
    assert plans[-1]["bn1"] == plans[-1]["conv1"] and plans[-1]["bn2"] == plans[-1]["conv2"]
    cut = sorted(set(range(16)) - set(plans[-1]["conv1"]))
    assert bool((model.conv1.weight[cut] == 0).all()) and bool((model.bn1.weight[cut] == 0).all())
    inputs = splits()["test"][0]
    with torch.no_grad():
        masked = model.eval()(inputs)
    small = pruner.finish()
    assert small is pruner.result.model and _widths(small) == {"conv1": 8, "conv2": 16, "fc1": 32}
    assert kept_by_layer(pruner.result.plan) == plans[-1]
    with torch.no_grad():
        torch.testing.assert_close(small(inputs), masked, rtol=1e-4, atol=1e-4)  # soft == hard
        torch.testing.assert_close(model(inputs), masked, rtol=0, atol=0)  # the masks made permanent
    assert not hasattr(model.conv1, "weight_orig") and model.conv1.out_channels == 16
    assert _accuracy(small) > 0.85
    pruner.result.save(tmp_path / "bundle")
    loaded = prunectl.load(tmp_path / "bundle")
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), small(inputs), rtol=0, atol=0)


def test_one_shot_gives_the_plan_prunectl_prune_gives_on_the_trained_model() -> None:
    torch.manual_seed(0)
    model = DigitsCNN()
    pruner = Pruner(model, one_shot(0.4, at=2), mode="structured", example_inputs=_example(), criterion="fpgm")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(3):
        _train_epoch(model, optimizer, epoch)
        if epoch == 2:
            reference = prunectl.prune(copy.deepcopy(model), example_inputs=_example(), rate=0.4, criterion="fpgm")
        pruner.step(epoch)
    assert kept_by_layer(pruner.channels.plan) == kept_by_layer(reference.plan)
    pruner.finish()
    assert _widths(pruner.result.model) == _widths(reference.model)


def test_lottery_ticket_rounds_compound_and_rewind_the_survivors_to_init() -> None:
    torch.manual_seed(0)
    model = DigitsCNN()
    initial = copy.deepcopy(model.state_dict())
    pruner = Pruner(model, lottery(0.3, rounds=2, every=2), mode="structured", example_inputs=_example())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(5):
        _train_epoch(model, optimizer, epoch)
        if pruner.step(epoch):
            assert torch.equal(model.conv2.weight_orig, initial["conv2.weight"])  # rewound
            live = model.conv2.weight_mask.bool()  # kept filters, less the columns reading cut conv1 channels
            assert torch.equal(model.conv2.weight[live], initial["conv2.weight"][live])
            assert int(live.any(dim=(1, 2, 3)).sum()) == len(pruner.channels.plan["conv2"].out)
    # 1 - 0.7 ** 2 = 51 % of the channels: conv2 keeps 32 - floor(32 * 0.51) = 16
    assert pruner.channels.rate == pytest.approx(0.51)
    assert _widths(pruner.finish())["conv2"] == 16


def test_network_slimming_then_bn_scale_cuts_by_the_norm_scales() -> None:
    model, pruner, plans = _fit({"criterion": "bn_scale", "slimming": 1e-3}, one_shot(0.5, at=3), epochs=4)
    kept = plans[-1]["conv1"]
    scales = model.bn1.weight_orig.detach().abs()
    assert set(kept) == set(torch.argsort(-scales)[:8].tolist())  # the largest |gamma| survive
    assert "fc1" not in plans[-1]  # fc1 reaches no norm: left whole (with a warning)
    assert _widths(pruner.finish()) == {"conv1": 8, "conv2": 16, "fc1": 64}


def test_a_resumed_run_keeps_the_plan_and_the_masks(tmp_path: Path) -> None:
    schedule = agp(0.5, start=0, end=2)
    model, pruner, _ = _fit({}, schedule, epochs=2)
    torch.save({"model": model.state_dict(), "pruner": pruner.state_dict()}, tmp_path / "mid.pt")
    saved = torch.load(tmp_path / "mid.pt", weights_only=True)
    torch.manual_seed(7)
    resumed_model = DigitsCNN()
    resumed = Pruner(resumed_model, schedule, mode="structured", example_inputs=_example())
    resumed.load_state_dict(saved["pruner"])
    resumed_model.load_state_dict(saved["model"])
    assert torch.equal(resumed_model.bn2.weight_mask, model.bn2.weight_mask)
    assert resumed.step(1) is False and resumed.step(2) is True
    assert all(set(resumed.channels.plan[name].out.tolist()) <= set(pruner.channels.plan[name].out.tolist())
               for name in pruner.channels.plan if pruner.channels.plan[name].out is not None)


def test_layer_by_layer_cuts_one_layer_per_event_with_training_in_between(tmp_path: Path) -> None:
    schedule = layer_by_layer(0.5, ["conv1", "conv2", "fc1"], start=1, every=2)
    model, pruner, plans = _fit({}, schedule, epochs=7)
    assert len(plans) == 3
    # each event cuts its layer's group and leaves the later ones whole; an earlier cut stays as it was
    assert [sorted(name for name in CONVS if name in plan) for plan in plans] == [
        ["conv1"], ["conv1", "conv2"], ["conv1", "conv2", "fc1"]]  # a layer left whole is not in the plan
    assert plans[0]["bn1"] == plans[0]["conv1"]
    assert plans[1]["conv1"] == plans[0]["conv1"] and plans[2]["conv2"] == plans[1]["conv2"]
    # the user's training between events moved the weights the later layers were scored on
    assert {name: len(plans[-1][name]) for name in CONVS} == {"conv1": 8, "conv2": 16, "fc1": 32}
    inputs = splits()["test"][0]
    with torch.no_grad():
        masked = model.eval()(inputs)
    small = pruner.finish()
    assert _widths(small) == {"conv1": 8, "conv2": 16, "fc1": 32}
    with torch.no_grad():
        torch.testing.assert_close(small(inputs), masked, rtol=1e-4, atol=1e-4)
    assert pruner.result.report["selection"]["only"] == ["conv1", "conv2", "fc1"]
    assert _accuracy(small) > 0.8
    reloaded = prunectl.load(pruner.result.save(tmp_path / "bundle"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(inputs), small(inputs), rtol=0, atol=0)


def test_layer_by_layer_resumes_from_its_state(tmp_path: Path) -> None:
    schedule = layer_by_layer(0.5, ["conv1", "conv2"], start=0)
    model, pruner, _ = _fit({}, schedule, epochs=1)  # conv1 cut, conv2 still to come
    torch.save({"model": model.state_dict(), "pruner": pruner.state_dict()}, tmp_path / "mid.pt")
    saved = torch.load(tmp_path / "mid.pt", weights_only=True)
    fresh = DigitsCNN()
    resumed = Pruner(fresh, schedule, mode="structured", example_inputs=_example())
    fresh.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["pruner"])
    assert resumed.channels.layers == ("conv1",)
    assert resumed.step(1) is True
    assert kept_by_layer(resumed.channels.plan)["conv1"] == kept_by_layer(pruner.channels.plan)["conv1"]
    assert len(kept_by_layer(resumed.channels.plan)["conv2"]) == 16


def test_bad_input_is_one_spec_error_line() -> None:
    with pytest.raises(SpecError, match="must be a torch.nn.Module, got str"):
        Pruner("model.pt", one_shot(0.5), mode="structured", example_inputs=_example())
    with pytest.raises(SpecError, match="needs example_inputs="):
        Pruner(DigitsCNN(), one_shot(0.5), mode="structured")
    with pytest.raises(SpecError, match="mode must be one of unstructured, structured, got 'channels'"):
        Pruner(DigitsCNN(), one_shot(0.5), mode="channels")
    mixed = layer_by_layer(0.5, ["conv1"]) + one_shot(0.5, at=3)
    with pytest.raises(SpecError, match="all layer events with a target"):
        Pruner(DigitsCNN(), mixed, mode="structured", example_inputs=_example())
    uneven = layer_by_layer(0.5, ["conv1"]) + layer_by_layer(0.25, ["conv2"], start=1)
    with pytest.raises(SpecError, match=r"the same fraction .* has \[0.25, 0.5\]"):
        Pruner(DigitsCNN(), uneven, mode="structured", example_inputs=_example())
    with pytest.raises(SpecError, match="global_ranking is for whole-model schedules"):
        Pruner(DigitsCNN(), layer_by_layer(0.5, ["conv1"]), mode="structured", example_inputs=_example(),
               global_ranking=True)
    with pytest.raises(SpecError, match="names layer 'conv9', which is no pruned layer and holds none"):
        Pruner(DigitsCNN(), layer_by_layer(0.5, ["conv9"]), mode="structured", example_inputs=_example())
    with pytest.raises(SpecError, match="'rate' is set by the Pruner"):
        Pruner(DigitsCNN(), one_shot(0.5), mode="structured", example_inputs=_example(), prune_options={"rate": 0.2})
    with pytest.raises(SpecError, match="scores channels from data: give data="):
        Pruner(DigitsCNN(), one_shot(0.5), mode="structured", example_inputs=_example(), criterion="taylor")
    wrong = [(torch.randn(4, 64), torch.zeros(4, dtype=torch.long))]  # flat rows, the model takes 1x8x8 images
    with pytest.raises(SpecError, match=r"Pruner: data: batch 0: inputs of shape \[4, 64\] do not fit"):
        Pruner(DigitsCNN(), one_shot(0.5), mode="structured", example_inputs=_example(), criterion="taylor",
               data=wrong)
    pruner = Pruner(DigitsCNN(), one_shot(0.5), mode="structured", example_inputs=_example(),
                    evaluate=lambda model: float("nan"))
    with pytest.raises(SpecError, match="evaluate\\(\\) returned nan after the event at epoch 0; expected a finite"):
        pruner.step(0)


class NormedMLP(nn.Module):
    """A LayerNorm over the hidden channels: its statistic must span the kept channels only."""

    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(64, 48), nn.LayerNorm(48), nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.norm(self.fc1(x.flatten(1)))))


def test_taylor_from_a_loader_on_a_layer_norm_model_keeps_soft_equal_to_hard() -> None:
    torch.manual_seed(0)
    model = NormedMLP()
    inputs, targets = splits()["train"]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs[:256], targets[:256]), batch_size=64)
    pruner = Pruner(model, agp(0.5, start=0, end=2), mode="structured", example_inputs=_example(),
                    criterion="taylor", data=loader, evaluate=_accuracy)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(4):
        _train_epoch(model, optimizer, epoch)
        pruner.step(epoch)
    assert len(pruner.sparsity_log) == 3 and all(0.5 < entry["metric"] <= 1 for entry in pruner.sparsity_log)
    test_inputs = splits()["test"][0]
    with torch.no_grad():
        masked = model.eval()(test_inputs)
    small = pruner.finish()
    assert small.fc1.out_features == 24 and small.norm.normalized_shape == (24,)
    with torch.no_grad():
        torch.testing.assert_close(small(test_inputs), masked, rtol=1e-4, atol=1e-4)


def test_global_ranking_events_cut_a_superset_and_a_revival_is_refused() -> None:
    from prunectl.cut.plan import ModuleCut
    from prunectl.errors import VerificationError
    from prunectl.hooks.structured import _check_superset

    _, pruner, plans = _fit({"global_ranking": True, "prune_options": {"round_to": 1}}, agp(0.6, start=0, end=3),
                            epochs=4)
    for before, after in zip(plans, plans[1:]):
        assert all(set(after[name]) <= set(before[name]) for name in before)
    before = {"conv1": ModuleCut(out=torch.tensor([0, 1, 2]))}
    with pytest.raises(VerificationError, match="bring back channels of 'conv1'"):
        _check_superset(before, {"conv1": ModuleCut(out=torch.tensor([0, 1, 3]))})
    with pytest.raises(VerificationError, match="bring back channels of 'conv1'"):
        _check_superset(before, {})  # the layer left whole again
