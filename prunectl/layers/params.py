"""Parameters whose channel dim must follow a channel space, cut like a norm's scale.

ConvNeXt multiplies each residual branch by a per-channel ``layer_scale`` of shape (C, 1, 1);
ViT adds a ``pos_embedding`` of shape (1, S, C). These are ``nn.Parameter`` attributes of
modules that are not themselves layers. A spec names one by its full name ("features.1.0.
layer_scale", as in ``named_parameters()``) with ``"dim"``, the axis that holds the channels
(docs/decisions.md). Masking zeroes that axis at the cut channels, surgery slices it, and a
bundle's ``resize`` records the new size as ``{"dim_0": 72}``.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn

from ..errors import SpecError


def parameter_of(modules: dict[str, nn.Module], name: str) -> tuple[nn.Module, str, nn.Parameter] | None:
    """(owner module, attribute, parameter) for a full parameter name, or None."""
    owner_name, _, attr = name.rpartition(".")
    owner = modules.get(owner_name)
    if owner is None or not attr:
        return None
    parameter = owner._parameters.get(attr)
    return None if parameter is None else (owner, attr, parameter)


def count_attribute_of(modules: dict[str, nn.Module], name: str) -> tuple[Any, str, int] | None:
    """(owner, attribute, count) for an attribute holding a channel count (``held_count``), or None.
    The owner is a module, or the transformers config a module reads
    (``self_attn.config.num_attention_heads``: Phi-3 slices its fused q/k/v at
    ``config.num_attention_heads * head_dim``; the config is the model's one, shared by every layer)."""
    owner_name, _, attr = name.rpartition(".")
    owner: Any = modules.get(owner_name)
    holder, _, field = owner_name.rpartition(".")
    if owner is None and field == "config" and holder in modules:
        owner = getattr(modules[holder], "config", None)
        owner = owner if type(owner).__name__.endswith("Config") else None
    count = None if owner is None or not attr else held_count(vars(owner).get(attr))
    return None if count is None else (owner, attr, count)


def count_attributes(module: Any) -> dict[str, int]:
    """A module's own attributes holding a count (``held_count``): where a model may keep a channel count."""
    counts = {key: held_count(value) for key, value in vars(module).items() if not key.startswith("_")}
    return {key: count for key, count in counts.items() if count is not None}


def int_counts(owner: Any, value: int) -> list[str]:
    """The int attributes of ``owner`` (a module or a config) holding ``value`` (shape tuples are
    matched where a view reads them whole, tracing/followers.py's ``_shape_attribute``)."""
    return [key for key, held in count_attributes(owner).items() if held == value and isinstance(vars(owner)[key], int)]


def int_counts_read_by_forward(owner: nn.Module, value: int) -> list[str]:
    """``int_counts`` that the module's forward reads by name, else the fields of the config it
    reads (Phi-3's ``self.config.num_attention_heads``; the module's own attribute first: its
    num_key_value_heads and the config's have one name), as ``config.FIELD``."""
    code = getattr(inspect.unwrap(getattr(type(owner), "forward", None)), "__code__", None)  # past decorators
    read = set(code.co_names if code is not None else ())
    names = [key for key in int_counts(owner, value) if key in read]
    config = getattr(owner, "config", None)
    if not names and "config" in read and type(config).__name__.endswith("Config"):
        names += [f"config.{key}" for key in int_counts(config, value) if key in read]
    return names


def held_count(value: object) -> int | None:
    """The count an attribute value holds: an int (not a bool), or a shape tuple of ints whose one
    entry other than 1 is the count (timm's metaformer ``Scale.shape``, ``(C, 1, 1)``, which its
    forward views the per-channel scale to). None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, tuple) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        wide = [v for v in value if v != 1]
        return wide[0] if len(wide) == 1 else None
    return None


def with_count(value: object, count: int) -> object:
    """``value`` (an int or a shape tuple, ``held_count``) holding ``count`` instead."""
    if isinstance(value, tuple):
        return tuple(count if v != 1 else 1 for v in value)
    return count


def set_count(owner: nn.Module, attr: str, count: int) -> None:
    """Give an attribute holding a channel count the kept count (a shape tuple keeps its 1s)."""
    setattr(owner, attr, with_count(getattr(owner, attr), count))


def replace_parameter(owner: nn.Module, attr: str, value: torch.Tensor) -> None:
    old = owner._parameters[attr]
    setattr(owner, attr, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))


def resize_of(built: torch.Tensor, target: torch.Tensor) -> dict[str, int]:
    """``{"dim_i": size}`` for every dim where ``target`` differs from ``built``."""
    return {f"dim_{i}": int(b) for i, (a, b) in enumerate(zip(built.shape, target.shape)) if a != b}


def apply_parameter_resize(owner: nn.Module, attr: str, attrs: dict, where: str) -> None:
    """Reallocate a parameter at the recorded sizes (values are loaded afterwards)."""
    old = owner._parameters[attr]
    shape = list(old.shape)
    for key, value in attrs.items():
        axis = key[4:] if key.startswith("dim_") else ""
        if not axis.isdigit() or int(axis) >= len(shape):
            raise SpecError(f"{where}: a parameter of shape {tuple(shape)} has no resizable attribute {key!r}; "
                            f"expected dim_0 .. dim_{len(shape) - 1}")
        shape[int(axis)] = recorded_size(value, f"{where}.{key}")
    replace_parameter(owner, attr, torch.zeros(shape, dtype=old.dtype, device=old.device))


def recorded_size(value: object, where: str) -> int:
    """A size read from a manifest's ``resize`` (or a spec): a positive int, never a bool."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"{where}: expected a positive integer, got {value!r}")
    return value
