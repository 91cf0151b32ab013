"""transformers models through ``torch.export`` (non-strict), never torch.fx.

transformers 5 removed ``transformers.utils.fx``, and its tracer never handled the decoders
(Llama's cache objects, ``co_varnames`` errors): torch.export records what actually runs, so a
forward that branches on ``None`` inputs or on shapes is captured as the branch taken.

The example goes in as the model's main input (``input_ids``, ``pixel_values``, ...), by name.
Decoders are captured with ``use_cache=False``: a KV cache is state carried between calls, not
part of one forward's channel flow, and torch.export cannot return transformers' cache objects.
The model is not modified, so the default ``use_cache=True`` still holds for everything after.
"""
from __future__ import annotations

import inspect
import io
from contextlib import redirect_stderr
from typing import Any

import torch
import torch.nn as nn

from ..errors import UnsupportedError, first_line
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
        with quiet_logs(), redirect_stderr(io.StringIO()):
            return torch.export.export(model, (), kwargs=hf_kwargs(model, example), strict=False)
    except Exception as exc:
        raise UnsupportedError(f"{type(model).__name__}: torch.export cannot capture it ({first_line(exc)})") \
            from None
