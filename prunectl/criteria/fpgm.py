"""FPGM: Filter Pruning via Geometric Median (He et al., CVPR 2019)."""
from __future__ import annotations

import torch

from .base import Criterion, LayerView


class FPGM(Criterion):
    """Score = sum of Euclidean distances from a filter to all other filters of the layer.

    Filters close to the layer's geometric median are replaceable by the others and score
    low (He et al. 2019, eq. 4-6, with the L2 norm between flattened filters).

    Torch-Pruning's ``FPGMImportance`` (1.6) departs from this: it first reduces each filter
    to a vector of squared magnitudes (``w.abs().pow(2)``, p=2) and measures distances
    between those vectors, which discards the filters' signs. We follow the paper.
    """

    name = "fpgm"
    description = "sum of Euclidean distances to the layer's other filters (He et al. 2019)"

    def score(self, layer: LayerView) -> torch.Tensor:
        weights = layer.out_channel_weights()
        return torch.cdist(weights, weights).sum(dim=1)
