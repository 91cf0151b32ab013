"""How the walk follows a residual stream through window attention (Swin, MaxViT).

A call of torchvision's ``ShiftedWindowAttention(V2)`` or MaxViT's
``RelativePositionalMultiHeadAttention`` is one leaf of the graph (graph.py's tracer; inside, the
heads' width is read from the input, layers/window_attention_modules.py): the packed q/k/v projection's input
columns follow the stream's channels (a parameter entry, ``qkv.weight`` dim 1) and the output
projection writes a new channel space (a listed Linear whose input, the heads, is fixed:
``"prev": []``). The heads stay whole, as for ``nn.MultiheadAttention`` (followers.py
``_attention``). A mixin of the walk's interpreter (walk.py).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch.fx.node import Node

from ..layers.window_attention import stream_projections
from .flow import Flow, Touch
from .graph import TracedLayer


class WindowAttentionFollower:
    """A method of ``walk._Walker`` (it provides ``_flow_of``, ``first_inputs`` and ``walk``)."""

    def _window_attention(self, node: Node, module: nn.Module, real_args: tuple, real_kwargs: dict,
                          incoming: list[Flow], result: Any) -> Flow:
        name = str(node.target)
        flow = incoming[0]
        if len(incoming) != 1 or not node.args or self._flow_of(node.args[0]) is not flow:
            raise Touch("takes pruned channels in an argument other than its input")
        if flow.composite:
            raise Touch("reads a concatenation of pruned channels (its q/k/v columns would need a cat entry)")
        if flow.factor != 1 or flow.dim != real_args[0].dim() - 1:
            raise Touch("reads pruned channels from a dim other than its last")
        if name in self.first_inputs:
            raise Touch("is called more than once (shared weights)")
        reader, writer = stream_projections(module)
        self.first_inputs[name] = flow.sources
        self.walk.layers.append(TracedLayer(f"{name}.{reader}.weight", "parameter", flow.sources, dim=1))
        self.walk.layers.append(TracedLayer(f"{name}.{writer}", "linear", None))
        return Flow(frozenset({f"{name}.{writer}"}), result.dim() - 1)
