"""Tied parameters (an LLM's embedding and lm_head, GPT-2's wte and head) stay one tensor.

Cutting and resizing give every module fresh tensors, which unties what the model shared:
the pruned model would then hold two copies, a fine-tune would update them apart, and the
config's ``tie_word_embeddings`` would no longer describe it. So the groups of names sharing a
tensor are read before, and each is made one tensor again after, where its members came out
with the same shape and values (a tie the plan cut differently is left as the plan made it:
the shared-weights rule of the trace pins such channels, so it does not arise from a traced spec).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .params import parameter_of


def tied_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """Names of the parameters that are one tensor, for every tensor held under more than one name."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return [tuple(group) for group in names.values() if len(group) > 1]


def retie(model: nn.Module, groups: list[tuple[str, ...]]) -> None:
    """Make each group one parameter again (the first name's), where the members agree."""
    modules = dict(model.named_modules())
    for group in groups:
        found = [parameter_of(modules, name) for name in group]
        if any(entry is None for entry in found):
            continue
        first = found[0][2]
        if all(entry[2] is first for entry in found):
            continue
        if any(entry[2].shape != first.shape or entry[2].dtype != first.dtype for entry in found):
            continue
        if not first.is_meta and not all(entry[2].is_meta or torch.equal(entry[2], first) for entry in found):
            continue
        for owner, attr, _ in found[1:]:
            owner._parameters[attr] = first


__all__ = ["retie", "tied_groups"]
