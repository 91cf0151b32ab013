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

    def score_entries(self, layer: LayerView, tensor: torch.Tensor) -> torch.Tensor:
        """Unstructured mode: each weight's magnitude relative to the largest of its output row."""
        rows = tensor.detach().double().abs().reshape(tensor.shape[0], -1) if tensor.dim() > 1 else \
            tensor.detach().double().abs().reshape(1, -1)
        return (rows / rows.amax(dim=1, keepdim=True).clamp_min(1e-300)).view(tensor.shape)
