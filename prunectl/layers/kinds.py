"""Which modules prunectl can cut, and how their tensors depend on channel counts.

One place knows, per module type, which tensor dimension follows the output channels and
which follows the input channels, and how to rebuild a module at new widths. Masking,
surgery and the manifest's ``resize`` all go through it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..errors import SpecError, UnsupportedError
from .attention import ResidualCutMultiheadAttention
from .params import recorded_size
from .rms_norms import over_dim_1, rms_form

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# LayerNorm classes whose forward is known: over the last dim (nn.LayerNorm; timm's only casts to
# float32), or over dim 1 of an NCHW tensor (permute, layer_norm, permute back). Any other subclass
# is traced through, so its F.layer_norm call is an op the tracer reports (exit 6).
# timm's metaformer ``*NoBias`` classes only set bias None (and eps) in __init__, forward inherited.
_LAYER_NORMS_LAST = {"torch.nn.modules.normalization.LayerNorm", "timm.layers.norm.LayerNorm",
                     "timm.models.metaformer.LayerNormNoBias"}
_LAYER_NORMS_FIRST = {"torchvision.models.convnext.LayerNorm2d", "timm.layers.norm.LayerNorm2d",
                      "timm.models.metaformer.LayerNorm2dNoBias"}
# timm's GlobalResponseNorm (ConvNeXt-V2): each channel's spatial L2 norm over their mean across the
# channels, then a per-channel weight and bias; its statistic ("response") spans the channels
_RESPONSE_NORM = "timm.layers.grn.GlobalResponseNorm"
# Conv2d subclasses that standardise each filter over its inputs before convolving (timm's NFNet,
# BiT): cutting an input changes every kept weight of the filter, so they are not convs to cut but
# ops the tracer reports (their F.conv2d on a computed weight); ScaledStdConv2d's per-filter
# ``gain`` would not be cut either
_STANDARDISED_CONVS = {f"timm.layers.std_conv.{name}" for name in
                       ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")}


def _qualified(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


@dataclass(frozen=True)
class LinearForm:
    """A layer of kind 'linear': ``y = x @ W.T + b`` (nn.Linear) or ``y = x @ W + b`` (transformers'
    ``Conv1D``, GPT-2's). Which attribute holds each width and which axis of ``weight`` is which; every
    function below reads the form instead of branching on the class."""
    out_attr: str
    in_attr: str
    out_axis: int  # the axis of ``weight`` indexed by output channel
    in_axis: int


_TORCH_LINEAR = LinearForm("out_features", "in_features", out_axis=0, in_axis=1)
# weight (nx, nf), bias (nf,), forward addmm(bias, x, weight): transformers/pytorch_utils.py
_LINEAR_FORMS = {"transformers.pytorch_utils.Conv1D": LinearForm("nf", "nx", out_axis=1, in_axis=0)}


def linear_form(module: nn.Module) -> LinearForm | None:
    if isinstance(module, nn.Linear):
        return _TORCH_LINEAR
    return _LINEAR_FORMS.get(_qualified(module))


def kind_of(module: nn.Module) -> str:
    """'conv', 'linear', 'norm', 'embedding', 'attention' or 'other'.

    'norm' is every module whose channels follow the layer before it, one parameter per channel:
    BatchNorm, LayerNorm over the channels, GroupNorm and PReLU with one slope per channel.
    'attention' is a self-attention ``nn.MultiheadAttention`` with one packed ``in_proj``: its
    inputs are the stream it reads (in_proj's columns), its outputs the q/k/v rows of its heads
    (in_proj's 3 x embed_dim rows); ``out_proj`` is a Linear of its own."""
    if is_packed_attention(module):
        return "attention"
    if isinstance(module, _CONV):
        return "other" if _qualified(module) in _STANDARDISED_CONVS else "conv"
    if linear_form(module) is not None:
        return "linear"
    if isinstance(module, (*_NORM, nn.GroupNorm)) or statistic(module) in ("layer", "rms", "response"):
        return "norm"
    if isinstance(module, nn.PReLU) and module.num_parameters > 1:
        return "norm"
    # an Embedding subclass of transformers (Gemma's scaled word embedding): transformers models are
    # captured by torch.export, whose graph holds the subclass's own ops after the lookup
    if type(module) is nn.Embedding or (isinstance(module, nn.Embedding) and
                                        type(module).__module__.startswith("transformers.")):
        return "embedding"
    return "other"


def is_packed_attention(module: nn.Module) -> bool:
    return type(module) in (nn.MultiheadAttention, ResidualCutMultiheadAttention) and \
        module.in_proj_weight is not None


def weight_name(module: nn.Module) -> str:
    """The tensor holding the module's filters: one row per output channel, columns per input."""
    return "in_proj_weight" if kind_of(module) == "attention" else "weight"


def weight_of(module: nn.Module) -> torch.Tensor:
    return getattr(module, weight_name(module))


def statistic(module: nn.Module) -> str | None:
    """'layer', 'rms' or 'group' for norms whose statistic spans channels (the soft model must compute it
    over the kept channels only), None otherwise."""
    if isinstance(module, nn.LayerNorm) and _qualified(module) in _LAYER_NORMS_LAST | _LAYER_NORMS_FIRST:
        return "layer"
    if rms_form(module) is not None:  # which RMSNorms: layers/rms_norms.py
        return "rms"
    if isinstance(module, nn.GroupNorm):
        return "group"
    if _qualified(module) == _RESPONSE_NORM:
        return "response"
    return None


def channel_dim(module: nn.Module, ndim: int) -> int:
    """The dimension of the module's input and output tensors that holds its channels."""
    if linear_form(module) is not None or isinstance(module, nn.Embedding):
        return ndim - 1
    if statistic(module) == "layer" and _qualified(module) in _LAYER_NORMS_LAST:
        return ndim - 1
    if statistic(module) == "rms":
        return 1 if over_dim_1(module) else ndim - 1
    if statistic(module) == "response":  # channels_last (NHWC, ConvNeXt-V2's Linear MLP) or NCHW
        return 1 if module.channel_dim == 1 else ndim - 1
    return 1


def rms_eps(module: nn.Module) -> float | None:
    """An RMSNorm's epsilon (torch's ``eps`` may be None: the dtype's own epsilon)."""
    return getattr(module, "variance_epsilon", getattr(module, "eps", None))


def norm_blocks(module: nn.Module) -> int:
    """GroupNorm keeps ``num_groups``: every group must keep the same number of channels, unless
    each channel is its own group (then cutting channels cuts groups)."""
    if isinstance(module, nn.GroupNorm) and 1 < module.num_groups < module.num_channels:
        return module.num_groups
    return 1


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
        return getattr(module, linear_form(module).out_attr)
    if kind == "norm":
        return _norm_width(module)
    if kind == "embedding":
        return module.embedding_dim
    if kind == "attention":
        return module.in_proj_weight.shape[0]
    raise UnsupportedError(f"{type(module).__name__} has no channel width prunectl knows")


def _norm_width(module: nn.Module) -> int:
    if statistic(module) == "response":  # keeps no width but its weight's; a resize records it as dim
        return getattr(module, "dim", module.weight.shape[0])
    if statistic(module) == "rms":
        shape = getattr(module, "normalized_shape", None)
        if shape is not None:
            return shape[0]
        # transformers' RMSNorms keep no width but their weight's; a resize records it as hidden_size
        return getattr(module, "hidden_size", module.weight.shape[0])
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[0]
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.PReLU):
        return module.num_parameters
    return module.num_features


def in_width(module: nn.Module) -> int:
    kind = kind_of(module)
    if kind == "conv":
        return module.in_channels
    if kind == "linear":
        return getattr(module, linear_form(module).in_attr)
    if kind == "norm":
        return _norm_width(module)
    if kind == "attention":
        return module.in_proj_weight.shape[1]
    raise UnsupportedError(f"{type(module).__name__} has no channel width prunectl knows")


def out_dims(module: nn.Module) -> dict[str, int]:
    """Tensor name -> dimension indexed by output channel."""
    kind = kind_of(module)
    if kind == "norm":
        return {name: 0 for name in ("weight", "bias", "running_mean", "running_var")
                if getattr(module, name, None) is not None}
    if kind == "embedding":
        return {"weight": 1}  # [num_embeddings, embedding_dim]: the channels are the columns
    if kind == "attention":
        return {name: 0 for name in ("in_proj_weight", "in_proj_bias") if getattr(module, name) is not None}
    form = linear_form(module)
    dims = {"weight": form.out_axis if form is not None else 1 if is_transposed(module) else 0}
    if getattr(module, "bias", None) is not None:
        dims["bias"] = 0
    return dims


def in_dim(module: nn.Module) -> int:
    """Dimension of ``weight`` indexed by (per-group) input channel."""
    form = linear_form(module)
    if form is not None:
        return form.in_axis
    return 0 if is_transposed(module) else 1


def shape_attrs(module: nn.Module) -> dict[str, int]:
    """The constructor attributes that set a module's tensor shapes."""
    kind = kind_of(module)
    if kind == "conv":
        return {"in_channels": module.in_channels, "out_channels": module.out_channels, "groups": module.groups}
    if kind == "linear":
        form = linear_form(module)
        return {form.in_attr: in_width(module), form.out_attr: out_width(module)}
    if kind == "norm":
        return {_width_attr(module): _norm_width(module),
                **({"num_groups": module.num_groups} if isinstance(module, nn.GroupNorm) else {})}
    if kind == "embedding":
        return {"num_embeddings": module.num_embeddings, "embedding_dim": module.embedding_dim}
    if kind == "attention":  # kdim/vdim: the width of the stream read (query, key and value alike)
        width = module.in_proj_weight.shape[1]
        return {"embed_dim": module.embed_dim, "num_heads": module.num_heads, "kdim": width, "vdim": width}
    return {}


def _width_attr(module: nn.Module) -> str:
    if statistic(module) == "response":
        return "dim"
    if statistic(module) == "rms":
        return "normalized_shape" if hasattr(module, "normalized_shape") else "hidden_size"
    if isinstance(module, nn.LayerNorm):
        return "normalized_shape"  # a one-element tuple, written as its one integer
    if isinstance(module, nn.GroupNorm):
        return "num_channels"
    if isinstance(module, nn.PReLU):
        return "num_parameters"
    return "num_features"


def check_supported(name: str, module: nn.Module) -> None:
    if any(v == 0 for v in shape_attrs(module).values()):  # e.g. Linear(64, 0): nothing to score or keep
        raise UnsupportedError(f"layer {name!r}: {type(module).__name__} with a zero-sized dimension "
                               f"({shape_attrs(module)}); prunectl needs at least one channel per layer")
    if isinstance(module, nn.LayerNorm) and kind_of(module) == "norm" and len(module.normalized_shape) != 1:
        raise UnsupportedError(f"layer {name!r}: LayerNorm over {len(module.normalized_shape)} dims "
                               f"{tuple(module.normalized_shape)}; prunectl cuts a LayerNorm over the channel dim "
                               "only: mark the layers before it \"prune\": false")
    if kind_of(module) == "embedding" and module.max_norm is not None:
        raise UnsupportedError(f"layer {name!r}: Embedding with max_norm renormalises each row over all "
                               "its channels; mark it \"prune\": false")
    if kind_of(module) == "attention" and (module.bias_k is not None or module.add_zero_attn):
        raise UnsupportedError(f"layer {name!r}: MultiheadAttention with bias_k/bias_v or add_zero_attn is not "
                               "supported; mark it \"prune\": false")
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
        form = linear_form(module)
        if new_out is not None:
            attrs[form.out_attr] = new_out
        if new_in is not None:
            attrs[form.in_attr] = new_in
    elif kind == "norm" and new_out is not None:
        if isinstance(module, nn.GroupNorm) and module.num_groups == module.num_channels:
            attrs["num_groups"] = new_out  # one channel per group: the groups go with the channels
        attrs[_width_attr(module)] = new_out
    elif kind == "embedding" and new_out is not None:
        attrs["embedding_dim"] = new_out
    elif kind == "attention":
        if new_out is not None:  # q, k and v each keep whole heads of head_dim rows
            attrs["embed_dim"] = new_out // 3
            attrs["num_heads"] = new_out // 3 // module.head_dim
        if new_in is not None:
            attrs["kdim"] = attrs["vdim"] = new_in
    return attrs


def apply_attrs(module: nn.Module, attrs: dict[str, Any], where: str) -> None:
    """Set shape attributes and reallocate tensors at the new shapes (values loaded later)."""
    current = shape_attrs(module)
    unknown = sorted(set(attrs) - set(current))
    if unknown:
        raise SpecError(f"{where}: {type(module).__name__} has no resizable attribute {unknown[0]!r}")
    for key, value in attrs.items():
        value = recorded_size(value, f"{where}.{key}")
        setattr(module, key, (value,) if key == "normalized_shape" else value)
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
        shape = [0, 0]
        form = linear_form(module)
        shape[form.out_axis], shape[form.in_axis] = out_width(module), in_width(module)
        _realloc(module, "weight", tuple(shape))
        _realloc(module, "bias", (out_width(module),))
    elif kind == "norm":
        if isinstance(module, nn.GroupNorm) and module.num_channels % module.num_groups:
            raise SpecError(f"{where}: {module.num_channels} channels not divisible by num_groups={module.num_groups}")
        for name in ("weight", "bias", "running_mean", "running_var"):
            _realloc(module, name, (_norm_width(module),))
    elif kind == "embedding":
        _realloc(module, "weight", (module.num_embeddings, module.embedding_dim))
    elif kind == "attention":
        if module.embed_dim % module.num_heads or module.kdim != module.vdim:
            raise SpecError(f"{where}: embed_dim={module.embed_dim} must be num_heads={module.num_heads} whole "
                            f"heads, and kdim={module.kdim} equal vdim={module.vdim}")
        module.head_dim = module.embed_dim // module.num_heads
        _realloc(module, "in_proj_weight", (3 * module.embed_dim, module.kdim))
        _realloc(module, "in_proj_bias", (3 * module.embed_dim,))


def _realloc(module: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    old = getattr(module, name, None)
    if old is None or tuple(old.shape) == tuple(shape):
        return
    fresh = torch.zeros(shape, dtype=old.dtype, device=old.device)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(fresh, requires_grad=old.requires_grad))
    else:
        setattr(module, name, fresh)
