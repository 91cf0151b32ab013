"""Which decoder layers ``--drop-layers N`` removes: the N of least block influence.

Block influence (ShortGPT, Men et al. 2024; the angular distance of Gromov et al. 2024) is
``1 - cos(x, f(x))`` between the hidden states a layer reads and those it writes, averaged over
the tokens of the proof inputs, or of ``--data`` when given: a layer that barely turns its
input is the one whose absence changes the model least. The surgery is cut/depth.py; its
proof verification/depth.py.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from ..cut.depth import DepthCut, config_fields, decoder_layers
from ..errors import SpecError, UnsupportedError
from ..models.forward import run


def block_influence(model: nn.Module, inputs: Iterable[torch.Tensor]) -> list[float]:
    """``1 - cos(hidden in, hidden out)`` per decoder layer, averaged over every token of ``inputs``."""
    _, layers = decoder_layers(model)
    totals = [0.0] * len(layers)
    tokens = [0] * len(layers)

    def recorder(index: int):
        def record(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            hidden = args[0] if args else kwargs.get("hidden_states")
            if not isinstance(output, torch.Tensor) or not isinstance(hidden, torch.Tensor):
                raise UnsupportedError(f"--drop-layers: layer {index} returns {type(output).__name__}; "
                                       "dropping layers supports decoder layers that return the hidden states")
            cos = nn.functional.cosine_similarity(hidden.double().flatten(0, -2), output.double().flatten(0, -2),
                                                  dim=-1)
            totals[index] += float((1.0 - cos).sum())
            tokens[index] += cos.numel()
        return record

    handles = [layer.register_forward_hook(recorder(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            for x in inputs:
                run(model, x, "original model")
    finally:
        for handle in handles:
            handle.remove()
    return [total / max(count, 1) for total, count in zip(totals, tokens)]


def choose_drop(model: nn.Module, count: int, inputs: list[torch.Tensor]) -> DepthCut:
    """The ``count`` layers of least block influence, and the config fields the drop changes."""
    name, layers = decoder_layers(model)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count < len(layers):
        raise SpecError(f"--drop-layers: expected an integer in [1, {len(layers) - 1}] ({type(model).__name__} "
                        f"has {len(layers)} layers), got {count}")
    influence = block_influence(model, inputs)
    order = sorted(range(len(layers)), key=lambda i: (influence[i], i))  # ties: the earlier layer
    dropped = tuple(sorted(order[:count]))
    return DepthCut(name, dropped, tuple(influence), config_fields(model.config, len(layers), dropped))


__all__ = ["block_influence", "choose_drop"]
