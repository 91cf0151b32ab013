"""Depth pruning: whole decoder layers removed (``--drop-layers N``), proven like a width cut.

The layers are the model's one ``nn.ModuleList`` as long as ``config.num_hidden_layers``
(transformers' decoders: ``model.layers``). Which ones go is decided by block influence
(ShortGPT, Men et al. 2024; the angular distance of Gromov et al. 2024): ``1 - cos(x, f(x))``
between the hidden states a layer reads and those it writes, averaged over the tokens of the
proof inputs, or of ``--data`` when given. The N layers that change their input least go.

The drop is proven as a cut is: the original with those layers skipped (each returns the hidden
states it was given: what a residual block with both branches silenced computes) must compute
what the renumbered smaller model does, in float64. The smaller model is a stock config:
``num_hidden_layers`` lowered, every per-layer config list (``layer_types``: Gemma's sliding and
full attention) filtered to the kept layers, and every ``layer_idx`` (the KV cache's slot)
renumbered. The width cut then runs on the smaller model, as on any other.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..errors import SpecError


@dataclass(frozen=True)
class DepthCut:
    container: str  # the ModuleList's name ("model.layers")
    dropped: tuple[int, ...]  # original indices, ascending
    influence: tuple[float, ...]  # block influence of every original layer
    args: dict[str, Any] = field(default_factory=dict)  # the config fields the drop changes

    def to_json(self) -> dict[str, Any]:
        return {"container": self.container, "dropped": list(self.dropped),
                "block_influence": [round(value, 6) for value in self.influence]}


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of decoder layers; SpecError when it has none prunectl can drop from."""
    config = getattr(model, "config", None)
    count = getattr(config, "num_hidden_layers", None)
    if isinstance(count, int):
        for name, module in model.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == count and name:
                return name, module
    raise SpecError(f"--drop-layers: {type(model).__name__} has no list of decoder layers prunectl knows "
                    "(a transformers model whose config has num_hidden_layers)")


def drop_layers(model: nn.Module, cut: DepthCut) -> nn.Module:
    """A copy of ``model`` without the dropped layers, renumbered, its config updated."""
    smaller = copy.deepcopy(model)
    layers = smaller.get_submodule(cut.container)
    kept = [layer for i, layer in enumerate(layers) if i not in cut.dropped]
    for index, layer in enumerate(kept):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):  # the KV cache's slot
                module.layer_idx = index
    owner_name, _, attr = cut.container.rpartition(".")
    owner = smaller.get_submodule(owner_name) if owner_name else smaller
    setattr(owner, attr, nn.ModuleList(kept))
    for key, value in cut.args.items():
        setattr(smaller.config, key, value)
    return smaller


def config_fields(config: Any, total: int, dropped: tuple[int, ...]) -> dict[str, Any]:
    """``num_hidden_layers`` and every per-layer list of the config, for the kept layers."""
    fields: dict[str, Any] = {"num_hidden_layers": total - len(dropped)}
    for key, value in config.to_dict().items():
        if isinstance(value, list) and len(value) == total and key != "architectures":
            fields[key] = [item for i, item in enumerate(value) if i not in dropped]
    return fields


class Skipped(nn.Module):
    """A dropped layer in the proof's reference: the hidden states pass through unchanged."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


__all__ = ["DepthCut", "Skipped", "config_fields", "decoder_layers", "drop_layers"]
