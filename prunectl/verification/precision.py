"""The proof runs in float64: float32 rounding must not be able to look like a bug, or hide one.

On real weights a few hidden dimensions carry activations 100x the others (outlier features); a
1536-wide and a 1232-wide float32 matmul then round differently by more than 1e-5 of the output,
and a float32 soft-vs-hard check refuses a correct prune (all-MiniLM-L6-v2 at rate 0.3: 8.2e-5,
with a verdict that changed with the seed of the inputs). In float64 the same two models agree to
the last bit or within ~1e-15, while every real mistake (a wrong kept index, a norm statistic over
the wrong channels, an input column left uncut) moves the output by far more than the 1e-9 bound
(docs/decisions.md, "The proof runs in float64").

``float64_proof(model)`` casts a model's floating parameters and buffers to float64 for the
block and puts the very same tensor objects back afterwards (ties and sharing kept, nothing
rounded). While it runs, the model's own downcasts (``x.float()``, ``.to(torch.float32)``,
``dtype=torch.float16``, torch's default dtype) stay float64 too, so that a norm computing its
statistic "in float32" (Llama's RMSNorm) does not round the proof back to float32.

torch has no fast float64 kernel for grouped convolutions: it loops over the groups, so a
depthwise conv runs ~10x slower than in float32 and a MobileNet's proof took 10 s. In the proof a
grouped 2-d convolution is computed as unfold + one batched matmul over the groups instead (the
same sums in float64, and the same multiply-accumulates for the MAC count).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..loading.memory import return_freed_memory

PROOF_DTYPE = torch.float64
PROOF_TOLERANCE = 1e-9  # relative: max|soft - hard| <= 1e-9 * max(1, max|soft|)
_LOWER = (torch.float32, torch.float16, torch.bfloat16)
_TO_LOWER = {torch.Tensor.float, torch.Tensor.half, torch.Tensor.bfloat16}


def proof_inputs(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The inputs in float64 (exact: every float32/16 value is a float64 value); ids unchanged."""
    return [x.to(PROOF_DTYPE) if x.is_floating_point() else x for x in inputs]


@contextmanager
def float64_proof(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with every floating parameter and buffer in float64 while the block runs."""
    _clear_eval_caches(model)
    originals: list[tuple[dict, str, torch.Tensor]] = []
    cast: dict[int, torch.Tensor] = {}  # id of an original -> its float64 copy: tied tensors stay tied
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for key, tensor in store.items():
                if tensor is None or not tensor.is_floating_point() or tensor.dtype == PROOF_DTYPE:
                    continue
                if id(tensor) not in cast:
                    wide = tensor.detach().to(PROOF_DTYPE)
                    cast[id(tensor)] = nn.Parameter(wide, requires_grad=False) if isinstance(
                        tensor, nn.Parameter) else wide
                originals.append((store, key, tensor))
                store[key] = cast[id(tensor)]
    default = torch.get_default_dtype()
    torch.set_default_dtype(PROOF_DTYPE)
    try:
        with _HoldFloat64():
            yield model
    finally:
        torch.set_default_dtype(default)
        for store, key, tensor in originals:
            store[key] = tensor
        cast.clear()
        _clear_eval_caches(model)
        return_freed_memory()  # the float64 copies: the next proof's peak must not count them


def _clear_eval_caches(model: nn.Module) -> None:
    """Empty what modules cache in eval mode and clear in ``train()``: timm's LeViT and
    EfficientFormer(V2) keep ``attention_biases[:, idxs]`` in ``attention_bias_cache``, a dict of
    tensors no cast reaches, filled at the first eval forward; a float32 entry met a float64 proof
    ("expected scalar type Float but found Double"), a float64 one the float32 runs after it. Each
    module's own training flag is put back as it was."""
    flags = [(module, module.training) for module in model.modules()]
    model.train(True)
    for module, training in flags:
        module.training = training


class _HoldFloat64(TorchFunctionMode):
    """Conversions to a narrower float (``.float()``, ``.half()``, ``.to(torch.float32)``,
    ``dtype=torch.bfloat16``) give float64 instead, for the length of a proof."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.conv2d:
            grouped = _grouped_conv2d(*args, **kwargs)
            if grouped is not None:
                return grouped
        if func in _TO_LOWER:
            return args[0].to(PROOF_DTYPE)
        if kwargs.get("dtype") in _LOWER:
            kwargs["dtype"] = PROOF_DTYPE
        if func in (torch.Tensor.to, torch.Tensor.type) and args:
            args = tuple(PROOF_DTYPE if isinstance(a, torch.dtype) and a in _LOWER else a for a in args)
            if func is torch.Tensor.to and len(args) > 1 and isinstance(args[1], torch.Tensor) and \
                    args[1].dtype in _LOWER and args[0].is_floating_point():
                args = (args[0], args[1].to(PROOF_DTYPE), *args[2:])  # x.to(other): other's dtype
        return func(*args, **kwargs)


def _as_pair(value: Any) -> tuple[int, int]:
    """A conv argument given as one int or as (height, width)."""
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _grouped_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: Any = 1,
                    padding: Any = 0, dilation: Any = 1, groups: int = 1) -> torch.Tensor | None:
    """``conv2d`` of a float64 batch with ``groups > 1`` as unfold + batched matmul (None: not that case)."""
    if groups == 1 or x.dtype != PROOF_DTYPE or x.dim() != 4 or isinstance(padding, str):
        return None
    (kh, kw), stride, padding, dilation = weight.shape[2:], _as_pair(stride), _as_pair(padding), _as_pair(dilation)
    n, _, h, w = x.shape
    out_channels, per_group = weight.shape[0], weight.shape[1]
    columns = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # [n, c*kh*kw, positions]
    columns = columns.view(n, groups, per_group * kh * kw, columns.shape[-1])
    out = torch.einsum("ngkl,gok->ngol", columns, weight.reshape(groups, out_channels // groups, per_group * kh * kw))
    out = out.reshape(n, out_channels, -1)
    if bias is not None:
        out = out + bias.view(1, -1, 1)
    height = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    width = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return out.view(n, out_channels, height, width)
