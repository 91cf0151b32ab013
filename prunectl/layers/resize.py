"""Giving a freshly built model the shapes a manifest's ``resize`` records (module surgery replayed).

Modules get their shape attributes and reallocated tensors (``kinds.apply_attrs``), int
attributes holding a channel count get their value, parameters of other modules their sizes
(``params.apply_parameter_resize``); attention whose residual width was cut gets the subclass
that reads it. Weights are loaded afterwards.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import SpecError
from . import kinds as L
from .attention import adapt_attention
from .params import apply_parameter_resize, count_attributes, parameter_of, recorded_size, set_count
from .ties import retie, tied_groups
from .window_attention import adapt_window_attention


def apply_resize(model: nn.Module, resize: dict[str, dict[str, int]], where: str = "resize") -> None:
    """Give modules the recorded shapes (tensors reallocated; load weights afterwards); tied
    parameters stay tied."""
    ties = tied_groups(model)
    modules = dict(model.named_modules())
    for name, attrs in resize.items():
        parameter = parameter_of(modules, name) if name not in modules else None
        if name in modules and L.kind_of(modules[name]) == "other" and isinstance(attrs, dict):
            # int attributes holding a channel count (ViT's hidden_dim); only ones the module has
            counts = count_attributes(modules[name])
            unknown = sorted(set(attrs) - set(counts))
            if unknown:
                raise SpecError(f"{where}.{name}: {type(modules[name]).__name__} has no attribute {unknown[0]!r} "
                                "holding a count")
            for key, value in attrs.items():
                set_count(modules[name], key, recorded_size(value, f"{where}.{name}.{key}"))
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
    retie(model, ties)
