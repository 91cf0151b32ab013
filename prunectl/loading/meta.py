"""Models on the meta device: shapes without storage, for estimates and for loading without init.

``meta_model`` builds a model whose tensors have shapes but no memory (the memory guard checks
a manifest's sizes on it before allocating); with ``real_buffers`` only its parameters are
placeholders (``materialize`` assigns the real weights into them, while the buffers the
constructor computes, such as a transformer's ``position_ids``, are already there, as
accelerate's ``init_empty_weights(include_buffers=False)`` leaves them); ``has_meta`` tells
whether any tensor of a model is still such a placeholder.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from itertools import chain
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from ..models.factory import build as factory_build


def meta_model(factory: str, args: Mapping[str, Any], real_buffers: bool = False) -> nn.Module | None:
    """The model with shapes but no storage (``real_buffers``: its buffers real), or None when its
    constructor can't run so."""
    return meta_build(lambda: factory_build(factory, dict(args)), real_buffers)


def meta_build(constructor: Callable[[], nn.Module], real_buffers: bool = False) -> nn.Module | None:
    """``constructor()`` with shapes but no storage, as ``meta_model`` builds a factory's model."""
    try:
        with (nullcontext() if real_buffers else torch.device("meta")), _parameters_on_meta(real_buffers), \
                _SkipInitOnMeta():
            return constructor()
    except Exception:  # the real build reports real problems; this is only an estimate
        return None


@contextmanager
def _parameters_on_meta(active: bool) -> Iterator[None]:
    """Every parameter registered in the block moves to the meta device as it is registered (its
    initialisation then runs on the placeholder, which ``_SkipInitOnMeta`` skips)."""
    if not active:
        yield
        return
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


class _SkipInitOnMeta(TorchFunctionMode):
    """Initialisers called on a meta tensor return it at once: there are no values to set, and
    the random ones have no meta kernel, so torch would run their Python decompositions (half
    of building resnet50 or mobilenet_v3 on meta, ~25 ms a build). Each returns its tensor, as
    the in-place op does; only value-setting ops are skipped, never one that changes a shape."""

    _VALUE_SETTERS = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_,
                                torch.Tensor.fill_, torch.Tensor.erfinv_, torch.Tensor.exponential_,
                                torch.Tensor.random_, torch.Tensor.bernoulli_, torch.Tensor.log_normal_})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._VALUE_SETTERS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def has_meta(model: nn.Module) -> bool:
    """A meta tensor anywhere a module keeps one: parameters, buffers, plain attributes and the
    lists, tuples and dicts in them."""
    for module in model.modules():
        for value in chain(module._parameters.values(), module._buffers.values(), vars(module).values()):
            items = (value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple))
                     else (value,))
            if any(isinstance(item, torch.Tensor) and item.is_meta for item in items):
                return True
    return False
