"""Reading checkpoints: prefixes, malformed contents, strict keys (factories: tests/models/test_factory.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunectl.errors import CheckpointError, SpecError
from prunectl.formats.spec import ModelRef
from prunectl.loading.checkpoint import load_checkpoint, read_checkpoint

ALEXNET = ModelRef("fixtures.models:AlexNet", {"num_classes": 10})


def test_data_parallel_prefix_is_removed(checkpoints, tmp_path: Path) -> None:
    state = torch.load(checkpoints["alexnet"], weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pt")
    loaded = load_checkpoint(tmp_path / "dp.pt", ALEXNET)
    assert torch.equal(loaded.model.conv1.weight, state["conv1.weight"])


@pytest.mark.parametrize("bad, fragment", [
    ({"conv1.weight": [1, 2, 3]}, "is a list, not a tensor"),
    ({"conv1.weight": torch.tensor([float("nan")])}, "contains NaN or infinite values"),
    ({}, "state_dict is empty"),
    ({"state_dict": {"a": torch.zeros(1)}, "optimizer": {}}, "unknown key 'optimizer'"),
    ({"state_dict": {"a": torch.zeros(1)}, "model": {"factory": 3}}, "'model' must be"),
    ([torch.zeros(1)], "holds a list"),
])
def test_malformed_contents(bad, fragment: str, tmp_path: Path) -> None:
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=None) as info:
        read_checkpoint(tmp_path / "bad.pt")
    assert fragment in str(info.value) and str(tmp_path / "bad.pt") in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="file is empty"):
        read_checkpoint(tmp_path / "e.pt")


def test_state_dict_needs_a_factory(checkpoints) -> None:
    with pytest.raises(SpecError, match="needs a model"):
        load_checkpoint(checkpoints["alexnet"])


def test_missing_and_unexpected_keys_are_listed(checkpoints, tmp_path: Path) -> None:
    state = torch.load(checkpoints["alexnet"], weights_only=True)
    state["extra.weight"] = state.pop("fc3.weight")
    torch.save(state, tmp_path / "k.pt")
    with pytest.raises(CheckpointError, match=r"missing: fc3\.weight; unexpected: extra\.weight"):
        load_checkpoint(tmp_path / "k.pt", ALEXNET)
