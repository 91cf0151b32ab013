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
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

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


class _HoldFloat64(TorchFunctionMode):
    """Conversions to a narrower float (``.float()``, ``.half()``, ``.to(torch.float32)``,
    ``dtype=torch.bfloat16``) give float64 instead, for the length of a proof."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
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
