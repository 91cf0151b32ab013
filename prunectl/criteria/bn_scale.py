"""Network slimming: |gamma| of the norm layer a channel reaches (Liu et al., ICCV 2017)."""
from __future__ import annotations

import torch

from .base import Criterion, LayerView


class BNScale(Criterion):
    """Score = |gamma| of the norm layer the layer's channels reach.

    Network slimming trains with an L1 penalty on the norm scales and prunes channels with small
    |gamma|; the scale multiplies the whole normalised channel, so it measures the channel's
    contribution directly. The norm is the one listed right after the layer or, through
    depthwise convs (they pass channels through one for one), the first one after them:
    MobileNet-style pointwise -> depthwise -> BatchNorm scores the pointwise conv from that
    BatchNorm (a depthwise multiplier m gives m scales per channel: their sum).

    A layer that reaches no affine norm (a Linear classifier, a pointwise conv feeding pooling)
    gets no score (``None``): its group keeps every channel unless another of its layers reaches
    a norm, as Torch-Pruning's ``BNScaleImportance`` does and the paper prunes only channels with
    a BatchNorm. ``report.json`` lists such groups under ``pinned_by``.
    """

    name = "bn_scale"
    description = "|gamma| of the norm layer the channels reach (network slimming, Liu et al. 2017)"
    unscored_reason = "reaches no affine norm layer (bn_scale leaves it unpruned)"

    def score(self, layer: LayerView) -> torch.Tensor | None:
        norm = layer.reached_norm if layer.reached_norm is not None else layer.next_norm
        weight = getattr(norm, "weight", None) if norm is not None else None
        if not isinstance(weight, torch.Tensor):
            return None
        gamma = weight.detach().double().abs()
        channels = layer.out_channels
        if gamma.numel() != channels and gamma.numel() % channels == 0:  # a depthwise multiplier
            gamma = gamma.view(channels, -1).sum(1)
        return gamma
