"""Network slimming: |gamma| of the BatchNorm after each channel (Liu et al., ICCV 2017)."""
from __future__ import annotations

import torch

from ..errors import SpecError
from .base import Criterion, LayerView


class BNScale(Criterion):
    """Score = |gamma| of the norm layer listed right after the layer in the spec.

    Network slimming trains with an L1 penalty on the BatchNorm scales and prunes channels
    with small |gamma|; the scale multiplies the whole normalised channel, so it measures
    the channel's contribution directly. A layer with no norm listed after it (in the same
    coupled group) cannot be scored this way: that is an error naming the layer.
    """

    name = "bn_scale"
    description = "|gamma| of the following BatchNorm (network slimming, Liu et al. 2017)"

    def score(self, layer: LayerView) -> torch.Tensor:
        norm = layer.next_norm
        if norm is None or getattr(norm, "weight", None) is None:
            raise SpecError(f"criterion 'bn_scale': layer {layer.name!r} has no affine norm layer listed right "
                            "after it in the spec; use another criterion or --exclude it")
        return norm.weight.detach().double().abs()
