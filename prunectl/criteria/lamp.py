"""LAMP: Layer-Adaptive Magnitude-based Pruning (Lee et al., ICLR 2021), per channel."""
from __future__ import annotations

import torch

from .base import Criterion, LayerView


class LAMP(Criterion):
    """Score of channel u = ||W_u||^2 / sum of ||W_v||^2 over channels v with ||W_v|| >= ||W_u||.

    The paper scores single weights: with a layer's weights sorted by magnitude, the score of
    weight u is ``w_u^2 / sum_{v >= u} w_v^2``. Adapted to structured pruning, a channel's
    filter plays the weight's role and its squared L2 norm plays ``w^2`` (as Torch-Pruning's
    ``LAMPImportance`` does). Ties are ordered by channel index (stable sort), so the channel
    listed first counts as the smaller one. The largest channel of every layer scores 1, which
    makes scores comparable across layers: they are not re-normalised by their mean.
    """

    name = "lamp"
    description = "layer-adaptive magnitude score: ||W_c||^2 over the sum for channels no smaller (Lee et al. 2021)"
    self_normalised = True

    def score(self, layer: LayerView) -> torch.Tensor:
        return _lamp(layer.out_channel_weights().pow(2).sum(dim=1))

    def score_entries(self, layer: LayerView, tensor: torch.Tensor) -> torch.Tensor:
        """The paper's own per-weight score (unstructured mode): ``w_u^2`` over the sum of the
        squares no smaller, within the tensor."""
        return _lamp(tensor.detach().double().reshape(-1).pow(2)).view(tensor.shape)


def _lamp(squared: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(squared, stable=True)  # ascending
    ascending = squared[order]
    # denominator of the k-th smallest: it plus every larger one (a reversed cumulative sum)
    tail_sums = ascending.flip(0).cumsum(0).flip(0)
    scores = torch.empty_like(squared)
    scores[order] = ascending / tail_sums.clamp_min(torch.finfo(torch.float64).tiny)
    return scores
