"""Soft pruning of norms whose statistic spans channels: compute it over the kept channels only.

Zeroing a LayerNorm's or GroupNorm's scale and shift silences a cut channel's *output*, but the
channel still enters the mean and variance of the others, so the soft model would normalise
by different numbers than the hard one: mask before a statistic, not after. The
soft model therefore gets, per such module, a forward that averages over the kept channels
only; a cut channel's output is then exactly 0 (its centred value is masked to 0 and its scale
and shift are zero), and every kept channel sees the hard model's statistic.
"""
from __future__ import annotations

from types import MethodType

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import kinds as L
from ..layers.rms_norms import rms_form


def install_masked_statistic(module: nn.Module, kept: torch.Tensor) -> None:
    """Make ``module`` (a LayerNorm, RMSNorm or GroupNorm of the soft model) normalise over ``kept`` only."""
    mask = torch.zeros(L.out_width(module), dtype=torch.bool)
    mask[kept] = True
    module._prunectl_kept_mask = mask  # plain attributes: not in the state_dict
    module._prunectl_kept_indices = torch.as_tensor(kept, dtype=torch.long).sort().values
    statistic = L.statistic(module)
    forward = {"layer": _masked_layer_norm, "rms": _masked_rms_norm,
               "response": _masked_response_norm}.get(statistic, _masked_group_norm)
    module.forward = MethodType(forward, module)


def _affine(module: nn.Module, y: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * y.dim()
    shape[dim] = -1
    if getattr(module, "weight", None) is not None:
        y = y * module.weight.view(shape)
    if getattr(module, "bias", None) is not None:
        y = y + module.bias.view(shape)
    return y


def _masked_layer_norm(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    dim = L.channel_dim(self, x.dim())
    if dim == x.dim() - 1 and len(self.normalized_shape) == 1:
        return _kept_layer_norm(self, x)
    shape = [1] * x.dim()
    shape[dim] = -1
    mask = self._prunectl_kept_mask.to(x.device).view(shape).to(x.dtype)
    count = mask.sum().clamp_min(1)
    mean = (x * mask).sum(dim, keepdim=True) / count
    centred = (x - mean) * mask
    var = (centred * centred).sum(dim, keepdim=True) / count
    return _affine(self, centred * torch.rsqrt(var + self.eps), dim)


def _kept_layer_norm(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """A channels-last LayerNorm over the kept channels: torch's own kernel on exactly the hard
    model's input, the cut channels 0 (a third of the masked formula's time on a ViT's proof)."""
    kept = self._prunectl_kept_indices.to(x.device)
    if not kept.numel():  # every channel cut: nothing to normalise, as the masked formula gives
        return torch.zeros_like(x)
    weight = None if self.weight is None else self.weight.index_select(0, kept)
    bias = None if self.bias is None else self.bias.index_select(0, kept)
    normalised = F.layer_norm(x.index_select(-1, kept), (kept.numel(),), weight, bias, self.eps)
    return torch.zeros_like(x).index_copy(-1, kept, normalised)


def _masked_rms_norm(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mean square over the kept channels, in float32 as transformers' RMSNorms compute it,
    scaled as the module's own formula does (layers/rms_norms.py)."""
    form = rms_form(self)
    if form in ("input_dtype", "input_dtype_2d", "variance", "variance_2d"):
        return _masked_timm_rms_norm(self, x, form)
    mask = self._prunectl_kept_mask.to(x.device).to(torch.float32)
    count = mask.sum().clamp_min(1)
    h = x.to(torch.float32) * mask
    eps = L.rms_eps(self)
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    y = h * torch.rsqrt((h * h).sum(-1, keepdim=True) / count + eps)
    if form == "one_plus_weight":  # Gemma: scaled in float32, then cast
        return (y * (1.0 + self.weight.to(torch.float32))).to(x.dtype)
    return self.weight * y.to(x.dtype)


def _masked_timm_rms_norm(self: nn.Module, x: torch.Tensor, form: str) -> torch.Tensor:
    """timm's RmsNorm(2d) and SimpleNorm(2d) (layers/rms_norms.py): in x's own dtype, over the kept
    channels; SimpleNorm's variance is torch.var's unbiased one, of the kept channels."""
    dim = L.channel_dim(self, x.dim())
    shape = [1] * x.dim()
    shape[dim] = -1
    mask = self._prunectl_kept_mask.to(x.device).view(shape).to(x.dtype)
    count = mask.sum().clamp_min(1)
    h = x * mask
    if form.startswith("variance"):
        centred = (x - h.sum(dim, keepdim=True) / count) * mask
        scale = (centred * centred).sum(dim, keepdim=True) / (count - 1).clamp_min(1)
    else:
        scale = (h * h).sum(dim, keepdim=True) / count
    return h * torch.rsqrt(scale + self.eps) * self.weight.view(shape)


def _masked_response_norm(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's GlobalResponseNorm: each channel's spatial L2 norm over their mean across the kept
    channels only; the cut channels' weight and bias are masked to zero, so they stay zero."""
    dim = L.channel_dim(self, x.dim())
    shape = [1] * x.dim()
    shape[dim] = -1
    mask = self._prunectl_kept_mask.to(x.device).view(shape).to(x.dtype)
    x_g = x.norm(p=2, dim=self.spatial_dim, keepdim=True)
    x_n = x_g / ((x_g * mask).sum(dim, keepdim=True) / mask.sum().clamp_min(1) + self.eps)
    return x + torch.addcmul(self.bias.view(self.wb_shape), self.weight.view(self.wb_shape), x * x_n)


def _masked_group_norm(self: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    n, c = x.shape[0], x.shape[1]
    groups = self.num_groups
    grouped = x.reshape(n, groups, c // groups, -1)
    mask = self._prunectl_kept_mask.to(x.device).view(1, groups, c // groups, 1).to(x.dtype)
    # a group whose channels are all cut (GroupNorm(C, C)) has nothing to average: its output is 0
    count = (mask.sum(dim=(2, 3), keepdim=True) * grouped.shape[-1]).clamp_min(1)
    mean = (grouped * mask).sum(dim=(2, 3), keepdim=True) / count
    centred = (grouped - mean) * mask
    var = (centred * centred).sum(dim=(2, 3), keepdim=True) / count
    y = (centred * torch.rsqrt(var + self.eps)).reshape(x.shape)
    return _affine(self, y, 1)
