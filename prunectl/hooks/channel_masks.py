"""A structured plan as ``torch.nn.utils.prune`` masks on the live model: same shapes, still trainable.

Which tensor entries a cut channel silences is the soft model's rule (cut/soft.py): the
producer's filter and bias, its norm's scale and shift, every reader's input columns. Rather
than restate that rule, the masks are read off the soft model of an all-ones copy: an entry
soft pruning zeroes is an entry the mask zeroes. The masks then sit on the user's own model as
``weight_orig``/``weight_mask`` pairs, so the optimizer keeps updating the same parameters,
momentum and weight decay cannot revive a cut channel, and ``prunectl.prune`` folds them on
reading. Norms whose statistic spans channels (LayerNorm, GroupNorm) also compute it over the
kept channels only, as in the soft model (cut/masked_norms.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

from ..cut.masked_norms import install_masked_statistic
from ..cut.plan import ModuleCut
from ..cut.soft import soft_prune
from ..formats.spec import ModelRef
from ..layers import kinds as L
from ..loading.in_memory import loaded_module, pruned_tensors

Plan = dict[str, ModuleCut]
MaskKey = tuple[str, str]  # (module name, tensor name)


@torch.no_grad()
def channel_masks(model: nn.Module, plan: Plan) -> dict[MaskKey, torch.Tensor]:
    """Per parameter the plan touches: a bool mask, False where the cut channels are."""
    ones = loaded_module(model, ModelRef.of_class(model)).model  # a plain CPU copy (torch masks folded)
    for parameter in ones.parameters():
        parameter.fill_(1.0)
    soft_prune(ones, plan, in_place=True)
    masks: dict[MaskKey, torch.Tensor] = {}
    for module_name, module in ones.named_modules():
        for tensor_name, parameter in module.named_parameters(recurse=False):
            if not bool((parameter != 0).all()):
                masks[(module_name, tensor_name)] = parameter != 0
    return masks


@torch.no_grad()
def apply_channel_masks(model: nn.Module, plan: Plan) -> None:
    """Mask ``model`` in place so it computes what ``plan``'s soft model does; entries an earlier
    mask cut stay cut (the masks are and-ed)."""
    for (module_name, tensor_name), mask in channel_masks(model, plan).items():
        module = model.get_submodule(module_name)
        current = getattr(module, tensor_name + "_mask", None)
        if current is not None:
            current.mul_(mask.to(current.device, current.dtype))
        else:
            device = getattr(module, tensor_name).device
            torch_prune.custom_from_mask(module, tensor_name, mask.to(device))
        # the attribute the forward reads is recomputed by the pre-hook; until then it is stale
        setattr(module, tensor_name, getattr(module, tensor_name + "_orig") * getattr(module, tensor_name + "_mask"))
    install_statistics(model, plan)


def install_statistics(model: nn.Module, plan: Plan) -> None:
    """LayerNorm/GroupNorm layers the plan cuts normalise over their kept channels only (a plain
    attribute, not in the state_dict: a resumed run installs it again from the plan)."""
    modules = dict(model.named_modules())
    for name, cut in plan.items():
        module = modules.get(name)
        if module is not None and cut.out is not None and cut.axis is None and L.statistic(module) is not None:
            install_masked_statistic(module, cut.out)


def refresh_masked(model: nn.Module) -> None:
    """Recompute every masked tensor (``orig * mask``) after its ``_orig`` changed outside a
    forward (a lottery-ticket rewind), as the forward pre-hook would."""
    for module, tensor_name in pruned_tensors(model):
        setattr(module, tensor_name, getattr(module, tensor_name + "_orig") * getattr(module, tensor_name + "_mask"))


def make_permanent(model: nn.Module) -> None:
    """``torch.nn.utils.prune.remove`` on every masked tensor: plain parameters, zeros where cut."""
    for module, tensor_name in pruned_tensors(model):
        torch_prune.remove(module, tensor_name)
