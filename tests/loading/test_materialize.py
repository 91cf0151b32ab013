"""Building a model that is about to receive its weights: the meta-device shortcut must give the
same model as build + strict load, and step aside when it cannot."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunectl.errors import CheckpointError
from prunectl.loading.materialize import build_with_weights
from prunectl.loading.meta import meta_model
from prunectl.models import factory as factories


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # weight tying, as language models do

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


class ComputedBuffer(nn.Module):
    """A non-persistent buffer computed by the constructor: not in the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.register_buffer("scale", torch.arange(1.0, 4.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


def _build(cls: type[nn.Module]):
    return lambda: cls()


def _materialize(cls: type[nn.Module], state_dict: dict) -> nn.Module:
    with torch.device("meta"):
        skeleton = cls()
    return build_with_weights(skeleton, state_dict, "weights.pt", _build(cls))


def test_meta_build_equals_ordinary_build_and_load() -> None:
    torch.manual_seed(0)
    source = factories.build("torchvision:resnet18", {}).eval()
    state = {k: v.clone() for k, v in source.state_dict().items()}
    model = build_with_weights(meta_model("torchvision:resnet18", {}), state, "weights.pt",
                               lambda: factories.build("torchvision:resnet18", {})).eval()
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert model.conv1.weight.data_ptr() == state["conv1.weight"].data_ptr()  # assigned, not copied
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    assert all(p.requires_grad for p in model.parameters())


def test_tied_weights_stay_tied_and_are_assigned_not_copied() -> None:
    source = Tied()
    state = source.state_dict()  # both names, one tensor: as an LLM's embedding and lm_head are saved
    built: list[nn.Module] = []

    def build() -> nn.Module:
        built.append(Tied())
        return built[-1]

    with torch.device("meta"):
        skeleton = Tied()
    model = build_with_weights(skeleton, state, "weights.pt", build)
    assert model.head.weight is model.embed.weight and not built  # no second model drawn and copied into
    assert model.embed.weight.data_ptr() == state["embed.weight"].data_ptr()
    assert torch.equal(model.embed.weight, source.embed.weight)


def test_tied_names_given_two_values_load_as_a_strict_load_does() -> None:
    source = Tied()
    state = {"embed.weight": source.embed.weight.detach().clone(), "head.weight": torch.randn(10, 4)}
    model = _materialize(Tied, state)
    reference = Tied()
    reference.load_state_dict(state)
    assert model.head.weight is model.embed.weight
    assert torch.equal(model.embed.weight, reference.embed.weight)


def test_constructor_computed_buffers_are_kept() -> None:
    source = ComputedBuffer()
    model = _materialize(ComputedBuffer, source.state_dict())
    assert not model.scale.is_meta and torch.equal(model.scale, torch.arange(1.0, 4.0))
    assert torch.equal(model.fc.weight, source.fc.weight)


def test_weights_are_cast_to_the_model_dtype_and_shared_storage_is_split() -> None:
    shared = torch.randn(3, 3, dtype=torch.float64)
    state = {"fc.weight": shared, "fc.bias": torch.zeros(3, dtype=torch.float64)}
    model = _materialize(ComputedBuffer, state)
    assert model.fc.weight.dtype == torch.float32  # a strict load casts; so does the shortcut
    two = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    weight = torch.randn(3, 3)
    with torch.device("meta"):
        skeleton = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    model = build_with_weights(skeleton, {"0.weight": weight, "1.weight": weight}, "w", lambda: two)
    assert model[0].weight.data_ptr() != model[1].weight.data_ptr()  # training one must not move the other
    assert torch.equal(model[0].weight, model[1].weight)


def test_wrong_keys_and_shapes_are_the_strict_load_error() -> None:
    with pytest.raises(CheckpointError,
                       match=r"weights.pt: does not fit the model \(ComputedBuffer\): missing: fc.bias"):
        _materialize(ComputedBuffer, {"fc.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match=r"shape mismatch: fc.weight \(2, 3\) vs model \(3, 3\)"):
        _materialize(ComputedBuffer, {"fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(3)})
