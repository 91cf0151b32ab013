"""L1 filter norm (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017)."""
from __future__ import annotations

import torch

from .base import Criterion, LayerView


class L1Norm(Criterion):
    """Score = sum of absolute weights of the filter producing each output channel."""

    name = "l1"
    description = "L1 norm of each output channel's weights (Li et al. 2017)"

    def score(self, layer: LayerView) -> torch.Tensor:
        return layer.out_channel_weights().abs().sum(dim=1)
