"""Random channel scores: the baseline every pruning paper compares against."""
from __future__ import annotations

import torch

from .base import Criterion, LayerView


class RandomScore(Criterion):
    """Score = uniform random numbers from a generator seeded by ``--seed`` and the layer name.

    The same seed and model give the same scores (and so the same bundle) on every run.
    """

    name = "random"
    description = "seeded uniform random scores (baseline; --seed picks the draw)"

    def score(self, layer: LayerView) -> torch.Tensor:
        return torch.rand(layer.out_channels, generator=layer.generator(), dtype=torch.float64)
