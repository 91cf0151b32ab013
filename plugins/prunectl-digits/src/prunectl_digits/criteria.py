"""A criterion written against prunectl's public plugin API only."""
from __future__ import annotations

import torch

from prunectl.criteria import Criterion, LayerView


class LInfNorm(Criterion):
    """Score = the largest absolute weight of the filter producing each output channel."""

    name = "linf"
    description = "largest absolute weight of each output channel (plugin example)"

    def score(self, layer: LayerView) -> torch.Tensor:
        return layer.out_channel_weights().abs().amax(dim=1)
