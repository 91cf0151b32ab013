"""Hard pruning: a copy of the model with the cut channels removed from every tensor."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from . import layers as L
from .attention import adapt_attention
from .params import apply_parameter_resize, count_attribute_of, count_attributes, parameter_of, replace_parameter
from .plan import ModuleCut
from .window_attention import adapt_window_attention


def sliced_tensors(module: nn.Module, cut: ModuleCut) -> dict[str, torch.Tensor]:
    """The module's channel-dependent tensors with only the kept indices left."""
    tensors = {name: getattr(module, name).detach() for name in L.out_dims(module)}
    if cut.out is not None:
        for name, dim in L.out_dims(module).items():
            tensors[name] = tensors[name].index_select(dim, cut.out)
    if cut.inp is not None and L.kind_of(module) not in ("norm", "embedding"):
        weight = L.weight_name(module)
        tensors[weight] = _slice_inputs(module, tensors[weight], cut)
    return {name: t.contiguous() for name, t in tensors.items()}


def _slice_inputs(module: nn.Module, weight: torch.Tensor, cut: ModuleCut) -> torch.Tensor:
    groups = getattr(module, "groups", 1)
    if groups == 1:
        return weight.index_select(L.in_dim(module), cut.inp)
    if L.is_depthwise(module):
        return weight  # one input per output: the output cut already removed it
    # Grouped conv: rows of block j see inputs [j*in_per_block, (j+1)*in_per_block).
    in_per_block = module.in_channels // groups
    out_per_block = module.out_channels // groups
    local = (cut.inp.view(groups, -1) - torch.arange(groups)[:, None] * in_per_block)  # [groups, kept/groups]
    rows = cut.out if cut.out is not None else torch.arange(module.out_channels)
    row_block = rows // out_per_block
    index = local[row_block]  # [rows, kept_in_per_block]
    index = index.view(*index.shape, *([1] * (weight.dim() - 2))).expand(-1, -1, *weight.shape[2:])
    return torch.gather(weight, 1, index)


def hard_prune(model: nn.Module, plan: dict[str, ModuleCut]) -> tuple[nn.Module, dict[str, dict[str, int]]]:
    """(pruned copy, new shape attributes of every resized module)."""
    hard = copy.deepcopy(model)
    modules = dict(hard.named_modules())
    new_attrs: dict[str, dict[str, int]] = {}
    for name, cut in plan.items():
        if cut.count:  # an attribute holding the channel count (ViT's hidden_dim)
            owner, attr, _ = count_attribute_of(modules, name)
            setattr(owner, attr, len(cut.out))
            new_attrs[name] = {attr: len(cut.out)}
            continue
        if cut.axis is not None:  # a parameter entry: keep its channels along its axis
            owner, attr, parameter = parameter_of(modules, name)
            with torch.no_grad():
                replace_parameter(owner, attr, parameter.detach().index_select(cut.axis, cut.out))
            new_attrs[name] = {f"dim_{cut.axis}": len(cut.out)}
            continue
        module = modules[name]
        tensors = sliced_tensors(module, cut)
        attrs = L.resized_attrs(module,
                                None if cut.out is None else len(cut.out),
                                None if cut.inp is None else len(cut.inp))
        L.apply_attrs(module, attrs, name)
        with torch.no_grad():
            for tensor_name, value in tensors.items():
                getattr(module, tensor_name).copy_(value)
        new_attrs[name] = attrs
    adapt_attention(hard)  # attention whose residual width was cut needs the subclass that reads it
    adapt_window_attention(hard)  # likewise Swin's and MaxViT's window attention
    return hard, new_attrs


def apply_resize(model: nn.Module, resize: dict[str, dict[str, int]], where: str = "resize") -> None:
    """Give modules the recorded shapes (tensors reallocated; load weights afterwards)."""
    from .errors import SpecError

    modules = dict(model.named_modules())
    for name, attrs in resize.items():
        parameter = parameter_of(modules, name) if name not in modules else None
        if name in modules and L.kind_of(modules[name]) == "other" and isinstance(attrs, dict):
            # int attributes holding a channel count (ViT's hidden_dim); only ones the module has
            counts = count_attributes(modules[name])
            unknown = sorted(set(attrs) - set(counts))
            if unknown:
                raise SpecError(f"{where}.{name}: {type(modules[name]).__name__} has no int attribute {unknown[0]!r}")
            for key, value in attrs.items():
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise SpecError(f"{where}.{name}.{key}: expected a positive integer, got {value!r}")
                setattr(modules[name], key, value)
            continue
        if parameter is None and (name not in modules or L.kind_of(modules[name]) == "other"):
            raise SpecError(f"{where}.{name}: no resizable module or parameter of that name in {type(model).__name__}")
        if not isinstance(attrs, dict):
            raise SpecError(f"{where}.{name}: expected an object of attribute -> size")
        if parameter is not None:
            apply_parameter_resize(parameter[0], parameter[1], attrs, f"{where}.{name}")
        else:
            L.apply_attrs(modules[name], attrs, f"{where}.{name}")
    adapt_attention(model)
    adapt_window_attention(model)
