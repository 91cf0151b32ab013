"""Build a model that is about to receive all of its weights, without initialising them first.

A torchvision or timm constructor spends most of its time drawing random initial weights
(resnet50: ~0.15 s of 0.18 s), which a strict load then overwrites. prunectl builds a model
three times per prune (the checkpoint, the rebuild proof, the memory guard) and once per
``prunectl.load``, so here the model is built on the meta device, resized, and handed the
weights by assignment: the same keys, shapes and error messages as a strict load, nothing
drawn, nothing allocated twice.

The shortcut is only taken when it gives the same model as building and loading:
- the constructor must run on meta (one that reads tensor values cannot);
- no buffer may be shared between modules, and tied parameters (an LLM's embedding and lm_head)
  must be given one value: they are assigned and then made one tensor again (``layers/ties.py``);
- after loading, nothing may be left on meta: non-persistent buffers and tensors kept as plain
  attributes are computed by the constructor and are not in the weights.
Otherwise the model is built and loaded the ordinary way.
"""
from __future__ import annotations

from itertools import chain
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from ..errors import PrunectlError
from ..layers.resize import apply_resize
from ..layers.ties import retie, tied_groups
from .meta import has_meta
from .state_dict import load_weights, with_metadata


def build_with_weights(skeleton: nn.Module | None, state_dict: Mapping[str, torch.Tensor], source: Any,
                       build: Callable[[], nn.Module],
                       resize: Mapping[str, Mapping[str, int]] | None = None) -> nn.Module:
    """The model holding ``state_dict``, loaded strictly (every key, every shape).

    ``skeleton``: the model built on the meta device (``meta.meta_model``), not yet
    resized, or None; ``build``: the ordinary way (a built and resized model, weights not
    loaded), used when the skeleton cannot be; ``resize``: the bundle's module surgery."""
    ties = tied_groups(skeleton) if skeleton is not None else []
    if skeleton is not None and _assignable(skeleton, resize, ties, state_dict):
        load_weights(skeleton, _owned_like(state_dict, skeleton), source, assign=True)
        retie(skeleton, ties)
        if not has_meta(skeleton):
            return skeleton
    model = build()
    load_weights(model, state_dict, source)
    return model


def _assignable(skeleton: nn.Module, resize: Mapping[str, Mapping[str, int]] | None,
                ties: list[tuple[str, ...]], state_dict: Mapping[str, torch.Tensor]) -> bool:
    if resize:
        try:
            apply_resize(skeleton, dict(resize))
        except PrunectlError:
            return False  # the ordinary path reports it, with its own wording
    tied = {name for group in ties for name in group}
    tensors = [t for name, t in chain(skeleton.named_parameters(remove_duplicate=False),
                                      skeleton.named_buffers(remove_duplicate=False)) if name not in tied]
    if len({id(t) for t in tensors}) != len(tensors):
        return False  # a shared buffer, or a parameter shared with a buffer: the ordinary way
    return all(_one_value(group, state_dict) for group in ties)


def _one_value(group: tuple[str, ...], state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the weights give a tied group's names one value (an LLM's embedding and lm_head
    saved once, or twice alike): then assigning and retying is the strict load into one tensor."""
    if not all(name in state_dict for name in group):
        return False
    first = state_dict[group[0]]
    return all(state_dict[name] is first or (state_dict[name].shape == first.shape and
                                             state_dict[name].dtype == first.dtype and
                                             torch.equal(state_dict[name], first)) for name in group[1:])


_ALIGNMENT = 64  # bytes: torch's CPU allocator's (c10::gAlignment)


def _owned_like(state_dict: Mapping[str, torch.Tensor], skeleton: nn.Module) -> Mapping[str, torch.Tensor]:
    """The weights in the dtypes the model declares (a strict load casts), none sharing memory
    with another (assignment would make them one tensor), each at an address torch's own
    allocator would give.

    safetensors' ``load_file`` returns tensors at 8- or 16-byte-aligned addresses; on AMD EPYC
    MKL's float32 matmul then rounds differently than on the 64-byte-aligned tensors of the model
    the bundle was written from (2e-8 apart on the mlp fixture), so ``prunectl.load`` would not
    compute bit for bit what ``prunectl.prune`` returned. A misaligned tensor is copied once."""
    expected = skeleton.state_dict()
    owned: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state_dict.items():
        if key in expected and value.dtype != expected[key].dtype:
            value = value.to(expected[key].dtype)
        storage = value.untyped_storage().data_ptr() if value.numel() else None
        if storage is not None and (storage in seen or value.data_ptr() % _ALIGNMENT):
            value = value.clone()
        elif storage is not None:
            seen.add(storage)
        owned[key] = value
    return with_metadata(owned, getattr(state_dict, "_metadata", None))  # torch's per-module versions
