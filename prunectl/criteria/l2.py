"""L2 filter norm (the NetAdapt-style tool's default; He et al. 2018 soft filter pruning)."""
from __future__ import annotations

import torch

from .base import Criterion, LayerView


class L2Norm(Criterion):
    """Score = Euclidean norm of the filter producing each output channel."""

    name = "l2"
    description = "L2 norm of each output channel's weights"

    def score(self, layer: LayerView) -> torch.Tensor:
        return layer.out_channel_weights().pow(2).sum(dim=1).sqrt()

    def score_entries(self, layer: LayerView, tensor: torch.Tensor) -> torch.Tensor:
        """Unstructured mode: the magnitude of each entry (the L2 norm of one weight)."""
        return tensor.detach().double().abs()
