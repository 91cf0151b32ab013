"""L1 filter norm (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Criterion, LayerView

# weights stored [out, in/groups, k...]: a filter is a row of weight.flatten(1)
_OUT_FIRST = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class L1Norm(Criterion):
    """Score = sum of absolute weights of the filter producing each output channel."""

    name = "l1"
    description = "L1 norm of each output channel's weights (Li et al. 2017)"

    def score(self, layer: LayerView) -> torch.Tensor:
        if isinstance(layer.module, _OUT_FIRST):
            # summed in float64 without a float64 copy of the weights first: |w| is exact and
            # each value widens exactly, so the sums are the same bits, at half the time
            return layer.weight.flatten(1).abs().sum(dim=1, dtype=torch.float64)
        return layer.out_channel_weights().abs().sum(dim=1)
