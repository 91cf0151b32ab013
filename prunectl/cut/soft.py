"""Soft pruning: a copy of the model with the same shapes and every cut channel silenced.

A cut channel's producing filter and bias, its norm layer's scale and shift, and the
consumers' input columns are all zeroed, so whatever lies between (an affine-free norm,
a bias added elsewhere) cannot bring the channel back to life.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..layers import kinds as L
from ..layers.params import parameter_of
from .masked_norms import install_masked_statistic
from .plan import ModuleCut


def _dropped(size: int, kept: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[kept] = False
    return mask.nonzero().flatten()


@torch.no_grad()
def soft_prune(model: nn.Module, plan: dict[str, ModuleCut], in_place: bool = False) -> nn.Module:
    """``model`` with every dropped channel's weights zeroed (a copy unless ``in_place``)."""
    soft = model if in_place else copy.deepcopy(model)
    modules = dict(soft.named_modules())
    for name, cut in plan.items():
        if cut.count:
            continue  # an attribute holding the channel count: the soft model keeps every channel
        if cut.axis is not None:  # a parameter entry: zero the cut channels along its axis
            parameter = parameter_of(modules, name)[2]
            parameter.index_fill_(cut.axis, _dropped(parameter.shape[cut.axis], cut.out), 0.0)
            continue
        module = modules[name]
        if cut.out is not None and L.statistic(module) is not None:
            install_masked_statistic(module, cut.out)  # LayerNorm/GroupNorm: statistic over kept channels
        if cut.out is not None:
            for tensor_name, dim in L.out_dims(module).items():
                if tensor_name.startswith("running_"):
                    continue  # statistics stay; zero scale and shift already silence the channel
                tensor = getattr(module, tensor_name)
                tensor.index_fill_(dim, _dropped(tensor.shape[dim], cut.out), 0.0)
        if cut.inp is not None and L.kind_of(module) not in ("norm", "embedding"):
            _zero_inputs(module, cut.inp)
    return soft


def _zero_inputs(module: nn.Module, kept_inputs: torch.Tensor) -> None:
    weight = L.weight_of(module)
    groups = getattr(module, "groups", 1)
    dropped = _dropped(L.in_width(module), kept_inputs)
    if groups == 1:
        weight.index_fill_(L.in_dim(module), dropped, 0.0)
        return
    if L.is_depthwise(module):
        return  # the output cut zeroed the only filter reading each dropped input
    in_per_block = module.in_channels // groups
    out_per_block = module.out_channels // groups
    for block in range(groups):
        local = dropped[(dropped // in_per_block) == block] - block * in_per_block
        if len(local):
            weight[block * out_per_block:(block + 1) * out_per_block].index_fill_(1, local, 0.0)
