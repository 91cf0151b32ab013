"""L1 filter norm (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Criterion, LayerView

# weights stored [out, in/groups, k...]: a filter is a row of weight.flatten(1)
_OUT_FIRST = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BLOCK = 1 << 20  # weights per float64 temporary (8 MB): a few large ops, never a float64 copy of a whole layer


class L1Norm(Criterion):
    """Score = sum of absolute weights of the filter producing each output channel."""

    name = "l1"
    description = "L1 norm of each output channel's weights (Li et al. 2017)"

    def score(self, layer: LayerView) -> torch.Tensor:
        if isinstance(layer.module, _OUT_FIRST):
            # summed in float64 a block of rows at a time: each value widens exactly and |w| is
            # exact, so the sums are the same bits as out_channel_weights().abs().sum(1). Widening
            # first matters: a float32 sum with dtype=float64 takes a slow casting path (7 s on a
            # ViT-B's weights, against 0.06 s here), and many small blocks stall on a busy machine
            weight = layer.weight.flatten(1)
            rows = max(1, _BLOCK // max(1, weight.shape[1]))
            return torch.cat([weight[i:i + rows].double().abs_().sum(dim=1)
                              for i in range(0, max(1, weight.shape[0]), rows)])
        return layer.out_channel_weights().abs().sum(dim=1)
