"""Network slimming's sparsity training (Liu et al. 2017): an L1 penalty on the norm layers' scales.

The paper adds ``s * sign(gamma)`` to each BatchNorm scale's gradient after ``backward``, which
is the subgradient of ``s * sum |gamma|`` added to the loss. A gradient hook on each scale does
that inside the user's own ``backward``, so the training loop is unchanged; ``bn_scale`` then
ranks the channels by the scales the penalty drove apart.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import SpecError
from ..layers.kinds import kind_of


class NormSparsity:
    """Hooks ``s * sign(scale)`` onto the gradient of every affine norm layer's scale in ``model``."""

    def __init__(self, model: nn.Module, strength: float):
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0 \
                or strength == float("inf"):
            raise SpecError(f"slimming: expected a finite strength >= 0 (the paper: 1e-5 to 1e-4), got {strength!r}")
        self.strength = float(strength)
        self.scales = {name: module.weight for name, module in model.named_modules()
                       if kind_of(module) == "norm" and isinstance(getattr(module, "weight", None), nn.Parameter)}
        if not self.scales:
            raise SpecError("slimming: the model has no norm layer with a learnable scale (BatchNorm, GroupNorm, "
                            "LayerNorm with elementwise_affine)")
        self.handles = [scale.register_hook(self._penalised(scale)) for scale in self.scales.values()]

    def _penalised(self, scale: nn.Parameter):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            return grad + self.strength * torch.sign(scale.detach())
        return hook

    def penalty(self) -> float:
        """``s * sum |gamma|``: what the hooks add to the loss, for logging."""
        return self.strength * float(sum(scale.detach().abs().sum() for scale in self.scales.values()))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
