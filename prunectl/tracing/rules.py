"""Per-operator channel rules: given the Flows of an op's inputs, the Flow of its output.

Every rule is a pure function of the real argument values (the tracer runs the graph, so
shapes and dims are concrete) and the argument Flows. An op prunectl does not know, or
one that mixes channels (a LayerNorm over them, a matmul, a concat along them), raises
``Touch``; the tracer then pins those channels or reports the op (exit 6).

Why element-wise ops are all safe: the soft model silences a cut channel at its producer,
and every consumer of a Flow is a listed layer (its input column is zeroed or sliced), the
model output (pinned) or an op that raised Touch (pinned). Whatever an activation makes of
a silenced channel in between is never read. Ops that can turn a silenced 0 into inf/NaN
(log, rsqrt, dividing by the channel) are not listed, so they pin.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .flow import (
    Flow,
    Touch,
    broadcast_dim,
    concatenated,
    indexed,
    merge,
    normalise_dim,
    permuted,
    reduced,
    reshaped,
    transposed,
)

ELEMENTWISE = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "gelu", "silu", "silu_", "hardswish", "hardswish_",
    "hardsigmoid", "hardsigmoid_", "sigmoid", "sigmoid_", "tanh", "tanh_", "leaky_relu", "leaky_relu_", "elu",
    "selu", "celu", "mish", "softplus", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout", "clone", "contiguous", "clamp", "clamp_", "clamp_min", "clamp_max", "abs", "neg",
    "float", "double", "half", "bfloat16", "to", "type", "type_as", "detach", "square", "erf", "exp", "sqrt",
}
SPATIAL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "lp_pool1d",
    "lp_pool2d",
}
BINARY = {"add", "add_", "iadd", "sub", "sub_", "isub", "rsub", "mul", "mul_", "imul", "div", "div_", "truediv",
          "itruediv", "pow"}
DIVISIONS = {"div", "div_", "truediv", "itruediv"}
RESHAPES = {"flatten", "view", "reshape", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
REDUCTIONS = {"mean", "sum", "amax", "amin", "std", "var", "nansum", "nanmean"}
SPLITS = {"split", "chunk", "tensor_split", "unbind"}
# x * p, x + p, x - p with a parameter p holding one entry per channel: p follows the channels
# (never division: a cut channel's zeroed entry would divide by zero)
PARAMETER_OPS = {"add", "add_", "iadd", "sub", "sub_", "isub", "rsub", "mul", "mul_", "imul"}

PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
    nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.Identity,
)
_SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.LPPool1d, nn.LPPool2d, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
)
_TRUSTED_MODULES = ("torch", "operator", "_operator", "builtins", "math")
# torch.export's aten ops whose arguments read like the torch function the rules know
_ATEN_ALIASES = {
    "_softmax": "softmax", "_log_softmax": "log_softmax", "constant_pad_nd": "pad", "_unsafe_view": "view",
    "_to_copy": "to", "alias": "clone", "lift_fresh_copy": "clone", "split_with_sizes": "split",
    "upsample_nearest2d": "upsample_nearest", "upsample_bilinear2d": "upsample_bilinear",
}
# Functions libraries hide from torch.fx (``torch.fx.wrap``) whose channel behaviour is known.
_WRAPPED = {
    # per-sample scaling in training, identity in eval: never mixes channels
    "torchvision.ops.stochastic_depth.stochastic_depth": "dropout",
}
# Swin's patch merging: pad H and W, then join the four 2x2-strided samples along the channels
PATCH_MERGING = "torchvision.models.swin_transformer._patch_merging_pad"


def op_name(target: Any) -> str:
    """A method name, or a function's name when it comes from torch/operator (never user code,
    so that a user's function called ``relu`` is not mistaken for torch's). An aten op (a torch.export
    graph) is named by its schema: ``aten::relu_`` -> ``relu_``."""
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        name = target._schema.name.split("::", 1)[-1]
        return _ATEN_ALIASES.get(name, name)
    module = getattr(target, "__module__", None) or "torch"
    name = getattr(target, "__name__", repr(target))
    if module.split(".")[0] in _TRUSTED_MODULES:
        return name
    qualified = f"{module}.{name}"
    return _WRAPPED.get(qualified, qualified)


def _first(values: Any, flows: Any) -> tuple[Any, Flow]:
    return values[0], flows[0]


def _arg(args: tuple, kwargs: dict, index: int, key: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(key, default)


def function_flow(name: str, args: tuple, kwargs: dict, flows: tuple, kflows: dict, result: Any) -> Any:
    """The Flow (or list of Flows, for tuple results) of a call_function/call_method node."""
    # indexing may keep every channel of a concatenation (GhostNet's ``cat([x1, x2])[:, :out_chs]``
    # when out_chs is the whole width): ``indexed`` refuses any index that drops one
    if name not in ELEMENTWISE | SPATIAL | RESHAPES | {"cat", "concat", "concatenate", "getitem", "slice"} and any(
            isinstance(f, Flow) and f.composite for f in _flat(flows)):
        raise Touch("works on a concatenation of pruned channels, which the tracer follows only through "
                    "element-wise ops, pooling and the layers it lists")
    if name in ELEMENTWISE:
        return _same_place(args[0], flows[0], result, name)
    if name in SPATIAL:
        return _spatial(flows[0], name)
    if name in BINARY:
        return _binary(name, args, kwargs, flows, kflows, result)
    if name in RESHAPES:
        return _reshaped(flows[0], tuple(args[0].shape), tuple(result.shape))
    if name == "permute":
        order = args[1:] if len(args) > 2 or isinstance(_arg(args, kwargs, 1, "dims"), int) else \
            _arg(args, kwargs, 1, "dims")
        return permuted(flows[0], list(order))
    if name in ("transpose", "swapaxes", "swapdims"):
        return transposed(flows[0], int(args[1]), int(args[2]), args[0].dim())
    if name in REDUCTIONS:
        return reduced(flows[0], _arg(args, kwargs, 1, "dim"), bool(_arg(args, kwargs, 2, "keepdim", False)),
                       args[0].dim())
    if name == "getitem":
        return _getitem(args, flows)
    if name in ("slice", "select"):  # aten's x[..., a:b] and x[..., i]
        return _aten_index(name, args, kwargs, flows[0])
    if name in ("cat", "concat", "concatenate", "stack"):
        return _concat(name, args, kwargs, flows, result)
    if name in SPLITS:
        return _split(name, args, kwargs, flows[0], result)
    if name in ("softmax", "log_softmax"):
        return _softmax(flows[0], _arg(args, kwargs, 1, "dim"), args[0].dim())
    if name == "pad":
        return _pad(flows[0], _arg(args, kwargs, 1, "pad"), args[0].dim())
    if name in ("expand", "expand_as"):
        return _expanded(args[0], flows[0], result)
    if name in ("matmul", "bmm"):
        return _matmul(args, flows, result)
    if name == "scaled_dot_product_attention":
        return _attention_product(args, kwargs, flows, kflows, result)
    if name == "timm.layers.attention.maybe_add_mask":  # scores + mask, or scores when there is none
        return flows[0] if args[1] is None else _binary("add", args, kwargs, flows, kflows, result)
    if name == PATCH_MERGING:
        return _patch_merging(args[0], flows[0])
    raise Touch("is an operator prunectl's tracer does not know")


def module_flow(module: nn.Module, value: Any, flow: Flow, result: Any) -> Flow:
    """The Flow of a leaf module other than the conv/linear/norm layers the tracer lists."""
    if isinstance(module, PASS_MODULES) or (isinstance(module, nn.PReLU) and module.num_parameters == 1):
        return _same_place(value, flow, result, type(module).__name__)
    if isinstance(module, _SPATIAL_MODULES):
        return _spatial(flow, type(module).__name__)
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        return _reshaped(flow, tuple(value.shape), tuple(result.shape))
    if flow.composite:
        raise Touch("works on a concatenation of pruned channels")
    if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
        return _softmax(flow, module.dim, value.dim())
    raise Touch("is a module prunectl cannot cut channels through")


def _flat(values: Any) -> list[Any]:
    if isinstance(values, (list, tuple)):
        return [v for item in values for v in _flat(item)]
    if isinstance(values, dict):
        return [v for item in values.values() for v in _flat(item)]
    return [values]


def _reshaped(flow: Flow, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Flow:
    moved = reshaped(flow, in_shape, out_shape)
    if flow.composite and moved.factor != flow.factor:
        raise Touch("flattens a concatenation of pruned channels together with the dims after it")
    return moved


def _same_place(value: Any, flow: Flow, result: Any, name: str) -> Flow:
    if not isinstance(result, torch.Tensor) or result.dim() != value.dim():
        raise Touch(f"{name} changes the tensor's rank")
    return flow


def _spatial(flow: Flow, name: str) -> Flow:
    if flow.dim != 1:
        raise Touch(f"{name} pools over dims that hold the channels (channels are in dim {flow.dim}, not 1)")
    return flow


def _binary(name: str, args: tuple, kwargs: dict, flows: tuple, kflows: dict, result: Any) -> Flow:
    a, b = args[0], _arg(args, kwargs, 1, "other")
    fa = flows[0]
    fb = flows[1] if len(flows) > 1 else kflows.get("other")
    if name in DIVISIONS and fb is not None:
        raise Touch("divides by pruned channels (a silenced channel would become 0/0)")
    if name == "pow" and fb is not None:
        raise Touch("raises to a power given by pruned channels")
    out_ndim = result.dim()
    placed = []
    fixed = []
    for value, flow in ((a, fa), (b, fb)):
        if flow is not None:
            d = broadcast_dim(flow, value.dim(), out_ndim)
            if value.shape[flow.dim] != result.shape[d]:
                raise Touch("broadcasts a tensor of pruned channels")
            placed.append(flow.at(d))
        elif isinstance(value, torch.Tensor) and value.dim() > 0:
            fixed.append(value)
    dims = {f.dim for f in placed}
    if len(dims) > 1:
        raise Touch("combines tensors whose channels sit in different dims")
    d = placed[0].dim
    for value in fixed:
        aligned = d - (out_ndim - value.dim())
        if aligned >= 0 and value.shape[aligned] != 1:
            raise Touch(f"combines the channels with a fixed tensor of shape {tuple(value.shape)} "
                        "(a parameter, buffer or tensor prunectl cannot cut)")
    return merge(placed, d)


def _getitem(args: tuple, flows: tuple) -> Any:
    container, index = args[0], args[1]
    flow = flows[0]
    if isinstance(flow, list):
        return flow[index] if isinstance(index, int) else flow[index]
    if isinstance(container, torch.Tensor):
        return indexed(flow, index, tuple(container.shape))
    raise Touch("indexes a container of pruned tensors")


def _aten_index(name: str, args: tuple, kwargs: dict, flow: Flow) -> Flow:
    value = args[0]
    dim = normalise_dim(int(_arg(args, kwargs, 1, "dim", 0)), value.dim())
    if name == "select":
        item: Any = int(_arg(args, kwargs, 2, "index"))
    else:
        item = slice(_arg(args, kwargs, 2, "start"), _arg(args, kwargs, 3, "end"), _arg(args, kwargs, 4, "step", 1))
    return indexed(flow, (slice(None),) * dim + (item,), tuple(value.shape))


def _concat(name: str, args: tuple, kwargs: dict, flows: tuple, result: Any) -> Flow:
    tensors = args[0]
    tensor_flows = flows[0]
    dim = normalise_dim(int(_arg(args, kwargs, 1, "dim", 0)), result.dim())
    placed = []
    for value, flow in zip(tensors, tensor_flows):
        if flow is None:
            raise Touch(f"joins pruned channels with a fixed tensor of shape {tuple(value.shape)}")
        if name == "stack":
            flow = flow.at(flow.dim + (1 if flow.dim >= dim else 0))
        placed.append(flow)
    if name != "stack" and any(f.dim == dim for f in placed):
        return concatenated(placed, dim)
    if len({f.dim for f in placed}) > 1:
        raise Touch("joins tensors whose channels sit in different dims")
    return merge(placed, placed[0].dim)


def _split(name: str, args: tuple, kwargs: dict, flow: Flow, result: Any) -> list[Flow]:
    dim = normalise_dim(int(_arg(args, kwargs, 1 if name == "unbind" else 2, "dim", 0)), args[0].dim())
    if flow.dim == dim:
        raise Touch("splits the channel dim")
    if name == "unbind":
        return [flow.at(flow.dim - (1 if flow.dim > dim else 0))] * len(result)
    return [flow] * len(result)


def _softmax(flow: Flow, dim: Any, ndim: int) -> Flow:
    if dim is None or normalise_dim(int(dim), ndim) == flow.dim:
        raise Touch("normalises over the channel dim (softmax)")
    return flow


def _pad(flow: Flow, pad: Any, ndim: int) -> Flow:
    pad = list(pad)
    padded = len(pad) // 2
    # F.pad pairs run from the last dim backwards
    position = ndim - 1 - flow.dim
    if position < padded and (pad[2 * position] or pad[2 * position + 1]):
        raise Touch("pads the channel dim")
    return flow


def _matmul(args: tuple, flows: tuple, result: Any) -> Flow:
    """``a @ b``: channels in a batch dim of either operand stay there (attention heads: q @ k^T,
    weights @ v); in a's rows or b's columns they become the result's; contracted, they mix."""
    a, b = args[0], args[1]
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() < 2 or b.dim() < 2:
        raise Touch("multiplies pruned channels with a vector (matmul)")
    out = result.dim()
    placed: list[tuple[str, Flow]] = []
    for value, flow, contracted in ((a, flows[0], a.dim() - 1), (b, flows[1] if len(flows) > 1 else None, b.dim() - 2)):
        if flow is None:
            continue
        if flow.dim == contracted:
            raise Touch("contracts the channel dim (matmul): every output mixes all channels")
        if flow.dim < value.dim() - 2:
            d = flow.dim + out - value.dim()
            if value.shape[flow.dim] != result.shape[d]:
                raise Touch("broadcasts a tensor of pruned channels (matmul)")
            placed.append(("batch", flow.at(d)))
        else:
            placed.append(("rows" if value is a else "columns", flow.at(out - 2 if value is a else out - 1)))
    kinds = {kind for kind, _ in placed}
    if len(kinds) > 1:
        raise Touch("multiplies tensors whose channels sit in different dims (matmul)")
    d = placed[0][1].dim
    if kinds == {"batch"}:
        _fixed_per_channel([v for v, f in ((a, flows[0]), (b, flows[1] if len(flows) > 1 else None)) if f is None],
                           d, out)
    return merge([flow for _, flow in placed], d)


def _attention_product(args: tuple, kwargs: dict, flows: tuple, kflows: dict, result: Any) -> Flow:
    """``scaled_dot_product_attention(q, k, v)``: heads in a batch dim of q, k and v stay there."""
    names = ("query", "key", "value", "attn_mask")
    values = [_arg(args, kwargs, i, key) for i, key in enumerate(names)]
    operand_flows = [flows[i] if i < len(flows) else kflows.get(key) for i, key in enumerate(names)]
    if operand_flows[3] is not None:
        raise Touch("uses pruned channels as an attention mask")
    placed = []
    for value, flow in zip(values[:3], operand_flows[:3]):
        if flow is None:
            continue
        if flow.dim >= value.dim() - 2:
            raise Touch("attends over pruned channels (they are not a heads/batch dim)")
        d = flow.dim + result.dim() - value.dim()
        if value.shape[flow.dim] != result.shape[d]:
            raise Touch("broadcasts heads of pruned channels (grouped-query attention)")
        placed.append(flow.at(d))
    if len({flow.dim for flow in placed}) > 1:
        raise Touch("attends with heads in different dims of q, k and v")
    d = placed[0].dim
    _fixed_per_channel([v for v, f in zip(values, operand_flows) if f is None], d, result.dim())
    return merge(placed, d)


def _fixed_per_channel(values: list[Any], d: int, out_ndim: int) -> None:
    for value in values:
        aligned = d - (out_ndim - value.dim()) if isinstance(value, torch.Tensor) else -1
        if aligned >= 0 and value.shape[aligned] != 1:
            raise Touch(f"combines the channels with a fixed tensor of shape {tuple(value.shape)} "
                        "(one slice per channel that prunectl cannot cut)")


def _expanded(value: Any, flow: Flow, result: Any) -> Flow:
    d = broadcast_dim(flow, value.dim(), result.dim())
    if result.shape[d] != value.shape[flow.dim]:
        raise Touch("expands the channel dim")
    return flow.at(d)


def _patch_merging(value: Any, flow: Flow) -> Flow:
    """``[..., H, W, C] -> [..., H/2, W/2, 4C]``: the same channel space four times, one after another."""
    if flow.dim != value.dim() - 1 or flow.factor != 1:
        raise Touch("samples the dims that hold the channels (patch merging)")
    return concatenated([flow] * 4, flow.dim)
