"""Hard pruning: a copy of the model with the cut channels removed from every tensor."""
from __future__ import annotations

import copy
from collections import Counter
from itertools import chain

import torch
import torch.nn as nn

from ..layers import kinds as L
from ..layers.attention import adapt_attention
from ..layers.params import count_attribute_of, parameter_of, replace_parameter, set_count
from ..layers.ties import retie, tied_groups
from ..layers.window_attention import adapt_window_attention
from ..loading.meta import has_meta
from .plan import ModuleCut


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


def hard_prune(model: nn.Module, plan: dict[str, ModuleCut], *,
               share_unchanged: bool = False) -> tuple[nn.Module, dict[str, dict[str, int]]]:
    """(pruned copy, new shape attributes of every resized module).

    The tensors the plan cuts are not copied first: the copy gets their slices, taken from
    ``model``. ``share_unchanged``: tensors of modules the plan does not name are shared with
    ``model`` instead of copied, for a caller that changes neither model's tensors outside
    the plan afterwards (api.prune: masking writes only to the modules the plan names)."""
    return _hard_prune(model, plan, share_unchanged, placeholders=True)


def _hard_prune(model: nn.Module, plan: dict[str, ModuleCut], share_unchanged: bool,
                placeholders: bool) -> tuple[nn.Module, dict[str, dict[str, int]]]:
    originals = dict(model.named_modules())
    hard = copy.deepcopy(model, _copy_memo(model, originals, plan, share_unchanged, placeholders))
    modules = dict(hard.named_modules())
    new_attrs: dict[str, dict[str, int]] = {}
    for name, cut in plan.items():
        if cut.count:  # an attribute holding the channel count (ViT's hidden_dim)
            owner, attr, _ = count_attribute_of(modules, name)
            set_count(owner, attr, len(cut.out))
            new_attrs[name] = {attr: len(cut.out)}
            continue
        if cut.axis is not None:  # a parameter entry: keep its channels along its axis
            owner, attr, _ = parameter_of(modules, name)
            parameter = parameter_of(originals, name)[2]
            with torch.no_grad():
                replace_parameter(owner, attr, _unshared(parameter.detach().index_select(cut.axis, cut.out), parameter))
            new_attrs[name] = {f"dim_{cut.axis}": len(cut.out)}
            continue
        module = modules[name]
        tensors = sliced_tensors(originals[name], cut)
        attrs = L.resized_attrs(module,
                                None if cut.out is None else len(cut.out),
                                None if cut.inp is None else len(cut.inp))
        L.apply_attrs(module, attrs, name)
        with torch.no_grad():
            for tensor_name, value in tensors.items():
                _put(module, tensor_name, value, getattr(originals[name], tensor_name))
        new_attrs[name] = attrs
    if placeholders and has_meta(hard):  # a placeholder reachable some other way than its slot: copy all
        return _hard_prune(model, plan, share_unchanged, placeholders=False)
    adapt_attention(hard)  # attention whose residual width was cut needs the subclass that reads it
    adapt_window_attention(hard)  # likewise Swin's and MaxViT's window attention
    retie(hard, tied_groups(model))  # the embedding and lm_head got one slice each: one tensor again
    return hard, new_attrs


def _copy_memo(model: nn.Module, modules: dict[str, nn.Module], plan: dict[str, ModuleCut],
               share_unchanged: bool, placeholders: bool) -> dict[int, object]:
    """deepcopy's memo: a shape-only (meta) placeholder for every tensor the plan replaces by its
    slice, and, with ``share_unchanged``, every tensor of an untouched module mapped to itself."""
    slots = list(chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)))
    uses = Counter(id(tensor) for _, tensor in slots)
    touched: set[int] = set()
    memo: dict[int, object] = {}
    for name, cut in plan.items():
        if cut.count:
            continue
        if cut.axis is not None:
            entry = parameter_of(modules, name)
            replaced = {entry[1]: entry[2]} if entry is not None else {}
            touched |= {id(t) for t in replaced.values()}
        elif name in modules:
            module = modules[name]
            replaced = {key: getattr(module, key) for key in L.out_dims(module)}
            touched |= {id(t) for t in chain(module._parameters.values(), module._buffers.values()) if t is not None}
        else:
            continue
        for tensor in replaced.values():
            if placeholders and isinstance(tensor, torch.Tensor) and uses[id(tensor)] == 1:  # tied: copied
                memo[id(tensor)] = _placeholder(tensor)
    if share_unchanged:
        for _, tensor in slots:
            if id(tensor) not in touched and id(tensor) not in memo and type(tensor) in (torch.Tensor, nn.Parameter):
                memo[id(tensor)] = (nn.Parameter(tensor.detach(), requires_grad=tensor.requires_grad)
                                    if isinstance(tensor, nn.Parameter) else tensor.detach())
    return {key: value for key, value in memo.items() if value is not None}


def _placeholder(tensor: torch.Tensor) -> torch.Tensor | None:
    if type(tensor) not in (torch.Tensor, nn.Parameter):
        return None  # a tensor subclass: copied as it was
    empty = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
    return nn.Parameter(empty, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty


def _put(module: nn.Module, name: str, value: torch.Tensor, original: torch.Tensor) -> None:
    """Give the copy's ``module.name`` the sliced ``value``: by assignment in place of a
    placeholder, else by copying into the tensor the copy already holds (keeping ties)."""
    current = getattr(module, name)
    if current.shape != value.shape:
        raise RuntimeError(f"{name}: the cut gives shape {tuple(value.shape)}, "
                           f"the resized module {tuple(current.shape)}")
    if not current.is_meta:
        current.copy_(value)
    elif isinstance(current, nn.Parameter):
        setattr(module, name, nn.Parameter(_unshared(value, original), requires_grad=current.requires_grad))
    else:
        setattr(module, name, _unshared(value, original))


def _unshared(value: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """``value``, or its copy when it is still ``original``'s memory (nothing was cut from it)."""
    if value.numel() and value.untyped_storage().data_ptr() == original.untyped_storage().data_ptr():
        return value.clone()
    return value
