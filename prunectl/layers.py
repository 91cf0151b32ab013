"""Which modules prunectl can cut, and how their tensors depend on channel counts.

One place knows, per module type, which tensor dimension follows the output channels and
which follows the input channels, and how to rebuild a module at new widths. Masking,
surgery and the manifest's ``resize`` all go through it.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .errors import SpecError, UnsupportedError

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def kind_of(module: nn.Module) -> str:
    """'conv', 'linear', 'norm' or 'other'."""
    if isinstance(module, _CONV):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _NORM):
        return "norm"
    return "other"


def is_transposed(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvTransposeNd)


def is_depthwise(module: nn.Module) -> bool:
    """Each output channel sees exactly one input channel: ``groups == in_channels > 1``."""
    return kind_of(module) == "conv" and module.groups > 1 and module.groups == module.in_channels


def out_width(module: nn.Module) -> int:
    kind = kind_of(module)
    if kind == "conv":
        return module.out_channels
    if kind == "linear":
        return module.out_features
    if kind == "norm":
        return module.num_features
    raise UnsupportedError(f"{type(module).__name__} has no channel width prunectl knows")


def in_width(module: nn.Module) -> int:
    kind = kind_of(module)
    if kind == "conv":
        return module.in_channels
    if kind == "linear":
        return module.in_features
    if kind == "norm":
        return module.num_features
    raise UnsupportedError(f"{type(module).__name__} has no channel width prunectl knows")


def out_dims(module: nn.Module) -> dict[str, int]:
    """Tensor name -> dimension indexed by output channel."""
    kind = kind_of(module)
    if kind == "norm":
        return {name: 0 for name in ("weight", "bias", "running_mean", "running_var")
                if getattr(module, name, None) is not None}
    dims = {"weight": 1 if is_transposed(module) else 0}
    if getattr(module, "bias", None) is not None:
        dims["bias"] = 0
    return dims


def in_dim(module: nn.Module) -> int:
    """Dimension of ``weight`` indexed by (per-group) input channel."""
    return 0 if is_transposed(module) else 1


def shape_attrs(module: nn.Module) -> dict[str, int]:
    """The constructor attributes that set a module's tensor shapes."""
    kind = kind_of(module)
    if kind == "conv":
        return {"in_channels": module.in_channels, "out_channels": module.out_channels, "groups": module.groups}
    if kind == "linear":
        return {"in_features": module.in_features, "out_features": module.out_features}
    if kind == "norm":
        return {"num_features": module.num_features}
    return {}


def check_supported(name: str, module: nn.Module) -> None:
    if any(v == 0 for v in shape_attrs(module).values()):  # e.g. Linear(64, 0): nothing to score or keep
        raise UnsupportedError(f"layer {name!r}: {type(module).__name__} with a zero-sized dimension "
                               f"({shape_attrs(module)}); prunectl needs at least one channel per layer")
    if is_transposed(module) and module.groups > 1:
        raise UnsupportedError(f"layer {name!r}: grouped {type(module).__name__} (groups={module.groups}) "
                               "is not supported; mark it \"prune\": false and keep its input fixed")


def resized_attrs(module: nn.Module, new_out: int | None, new_in: int | None) -> dict[str, int]:
    """Shape attributes after cutting outputs to ``new_out`` and inputs to ``new_in``."""
    attrs = shape_attrs(module)
    kind = kind_of(module)
    if kind == "conv":
        if new_out is not None:
            attrs["out_channels"] = new_out
        if new_in is not None:
            if is_depthwise(module):
                attrs["groups"] = new_in
            attrs["in_channels"] = new_in
    elif kind == "linear":
        if new_out is not None:
            attrs["out_features"] = new_out
        if new_in is not None:
            attrs["in_features"] = new_in
    elif kind == "norm" and new_out is not None:
        attrs["num_features"] = new_out
    return attrs


def apply_attrs(module: nn.Module, attrs: dict[str, Any], where: str) -> None:
    """Set shape attributes and reallocate tensors at the new shapes (values loaded later)."""
    current = shape_attrs(module)
    unknown = sorted(set(attrs) - set(current))
    if unknown:
        raise SpecError(f"{where}: {type(module).__name__} has no resizable attribute {unknown[0]!r}")
    for key, value in attrs.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"{where}.{key}: expected a positive integer, got {value!r}")
        setattr(module, key, value)
    kind = kind_of(module)
    if kind == "conv":
        if module.in_channels % module.groups or module.out_channels % module.groups:
            raise SpecError(f"{where}: channels {module.in_channels}->{module.out_channels} "
                            f"not divisible by groups={module.groups}")
        if is_transposed(module):
            shape = (module.in_channels, module.out_channels // module.groups, *module.kernel_size)
        else:
            shape = (module.out_channels, module.in_channels // module.groups, *module.kernel_size)
        _realloc(module, "weight", shape)
        _realloc(module, "bias", (module.out_channels,))
    elif kind == "linear":
        _realloc(module, "weight", (module.out_features, module.in_features))
        _realloc(module, "bias", (module.out_features,))
    elif kind == "norm":
        for name in ("weight", "bias", "running_mean", "running_var"):
            _realloc(module, name, (module.num_features,))


def _realloc(module: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    old = getattr(module, name, None)
    if old is None or tuple(old.shape) == tuple(shape):
        return
    fresh = torch.zeros(shape, dtype=old.dtype, device=old.device)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(fresh, requires_grad=old.requires_grad))
    else:
        setattr(module, name, fresh)
