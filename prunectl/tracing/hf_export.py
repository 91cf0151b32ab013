"""transformers models through ``torch.export`` (non-strict), never torch.fx.

transformers 5 removed ``transformers.utils.fx``, and its tracer never handled the decoders
(Llama's cache objects, ``co_varnames`` errors): torch.export records what actually runs, so a
forward that branches on ``None`` inputs or on shapes is captured as the branch taken.

The example goes in as the model's main input (``input_ids``, ``pixel_values``, ...), by name.
Decoders are captured with ``use_cache=False``: a KV cache is state carried between calls, not
part of one forward's channel flow, and torch.export cannot return transformers' cache objects.
The model is not modified, so the default ``use_cache=True`` still holds for everything after.

transformers' RMSNorms are written out (pow, mean, rsqrt, mul), which the walk would read as a
reduction over the channels; for the capture each runs as ``F.rms_norm`` instead, one
``aten.rms_norm`` op with the module's weight, walked as that norm (capture.py). Its values may
differ in the last bits from the model's float32-then-cast arithmetic: the walk follows shapes
only, and every check runs the model's own forward.
"""
from __future__ import annotations

import inspect
import io
from contextlib import contextmanager, redirect_stderr
from types import MethodType
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnsupportedError, first_line
from ..layers import kinds as L
from ..models.hf_provider import main_input_name
from .graph import quiet_logs


def hf_kwargs(model: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """The keyword arguments a transformers model is captured with."""
    kwargs: dict[str, Any] = {main_input_name(model): example}
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs["use_cache"] = False
    return kwargs


def hf_export(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export's program of a transformers model; UnsupportedError when it cannot capture it."""
    try:
        # torch.export prints the partial graph of a failed capture to stderr itself (torch/export/_trace.py)
        with quiet_logs(), redirect_stderr(io.StringIO()), _functional_rms_norms(model):
            return torch.export.export(model, (), kwargs=hf_kwargs(model, example), strict=False)
    except Exception as exc:
        raise UnsupportedError(f"{type(model).__name__}: torch.export cannot capture it ({first_line(exc)})") \
            from None


def _rms_norm(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (self.weight.shape[0],), self.weight, L.rms_eps(self))


@contextmanager
def _functional_rms_norms(model: nn.Module) -> Iterator[None]:
    """Every RMSNorm of ``model`` computed by ``F.rms_norm`` while the block runs, then put back
    exactly (an instance ``forward`` already there, such as a soft model's masked one, included)."""
    swapped = []
    for module in model.modules():
        if L.statistic(module) == "rms" and not isinstance(module, nn.RMSNorm):
            swapped.append((module, module.__dict__.get("forward")))
            module.forward = MethodType(_rms_norm, module)
    try:
        yield
    finally:
        for module, forward in swapped:
            if forward is None:
                del module.forward
            else:
                module.forward = forward
