"""Per-layer selection: how many channels a group keeps at a rate, and which."""
from __future__ import annotations

import pytest
import torch

from prunectl.selection.per_layer import SelectOptions, kept_count, top_indices


@pytest.mark.parametrize("size, rate, round_to, min_channels, blocks, expected", [
    (10, 0.3, 1, 1, 1, 7), (100, 0.29, 1, 1, 1, 71), (64, 0.5, 8, 1, 1, 32), (64, 0.55, 8, 1, 1, 32),
    (64, 0.6, 8, 1, 1, 32), (3, 0.99, 1, 1, 1, 1), (16, 0.9, 1, 4, 1, 4), (6, 0.5, 4, 1, 1, 4),
    (3, 0.5, 8, 1, 1, 3), (32, 0.5, 1, 1, 4, 16), (32, 0.6, 1, 1, 4, 16), (32, 0.6, 3, 1, 4, 24),
])
def test_kept_count(size, rate, round_to, min_channels, blocks, expected) -> None:
    options = SelectOptions(rate=rate, round_to=round_to, min_channels=min_channels)
    assert kept_count(size, rate, options, blocks) == expected


def test_top_indices_breaks_ties_toward_lower_index() -> None:
    assert top_indices(torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0]), 2).tolist() == [1, 2]
