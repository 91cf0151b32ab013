"""Running a model the way every check runs it: no gradients, attention unfused, outputs flattened."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..errors import SpecError, VerificationError, first_line
from ..layers.attention import unfused_attention


def flat_outputs(output: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) model output, in a stable order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for key in output for t in flat_outputs(output[key])]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in flat_outputs(item)]
    if hasattr(output, "to_tuple"):  # transformers ModelOutput
        return flat_outputs(output.to_tuple())
    return []


@torch.no_grad()
def run(model: nn.Module, x: torch.Tensor, what: str) -> list[torch.Tensor]:
    """The model's output tensors on ``x``; a failure is a VerificationError naming ``what``."""
    try:
        with unfused_attention():  # the soft model's masked norms must run (layers/attention.py)
            outputs = flat_outputs(model(x))
    except Exception as exc:
        raise VerificationError(f"{what} failed on input {tuple(x.shape)}: {first_line(exc)}") from None
    if not outputs:
        raise SpecError(f"{what} returned no tensors")
    return outputs
