"""What the channel walk produces and the small graph helpers it shares with its followers.

``symbolic_graph`` traces a model with torch.fx, keeping every listed layer kind a single node;
``TracedLayer``/``Incident``/``Walk`` are the walk's plain-data result (tracing/trace.py turns
them into a spec).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import Node

from ..errors import UnsupportedError, first_line
from ..layers import kinds as L
from ..layers.attention import unfused_attention
from ..layers.window_attention import is_window_attention
from .flow import Flow
from .rules import op_name

# torch logs failed captures (whole graphs) and tracer notes as warnings; prunectl reports the
# failure as one error line instead (only the CLI prints)
_NOISY_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch.fx._symbolic_trace", "torch.export",
                  "torch._export", "torch._dynamo", "transformers.utils.fx")


@dataclass(frozen=True)
class TracedLayer:
    name: str
    kind: str  # "conv", "linear", "norm", "embedding", "parameter" or "count" (an int attribute)
    inputs: frozenset[str] | None  # listed layers feeding it (a prev sum); None: fixed input
    cat: tuple[frozenset[str], ...] | None = None  # its input is this channel concatenation
    dim: int | None = None  # a parameter: the axis that holds the channels
    heads: int | None = None  # a projection into attention heads: heads per part, and their width
    head_dim: int | tuple[int, ...] | None = None  # one per part where the parts' heads differ (Phi-3)
    parts: int | None = None  # outputs split into this many equal parts of the same channels (gate, up)


@dataclass(frozen=True)
class Size:
    """A shape read from a tensor of pruned channels (``dim``: where the channel count sits in it),
    or that channel count itself (``dim`` None). The hard model reads a smaller number there, so
    it may only size a reshape of the same channels (``x.view(n, c, -1)``); any other use pins."""

    sources: frozenset[str]
    dim: int | None = None


@dataclass(frozen=True)
class Incident:
    """An op that touches pruned channels in a way prunectl cannot follow."""

    where: str  # module path (or graph node name) of the op
    op: str
    reason: str
    sources: frozenset[str]  # listed layers whose channels it touches

    def describe(self) -> str:
        return f"{self.where} ({self.op}) {self.reason}"


@dataclass
class Walk:
    layers: list[TracedLayer] = field(default_factory=list)
    output_sources: set[str] = field(default_factory=set)
    incidents: list[Incident] = field(default_factory=list)
    # channel spaces that must end up coupled (one attribute sizes them all): checked after the walk
    ties: list[Incident] = field(default_factory=list)

    def untied(self) -> list[Incident]:
        """The ties whose spaces no listed layer's input sum brings together."""
        find = self.summed_together()
        return [tie for tie in self.ties if len({find(name) for name in tie.sources}) > 1]

    def summed_together(self) -> Callable[[str], str]:
        """``find(space)``: one representative per set of channel spaces that the listed layers'
        input sums join (union-find over every layer's ``inputs``)."""
        parent: dict[str, str] = {}

        def find(name: str) -> str:
            while parent.get(name, name) != name:
                name = parent[name]
            return name
        for layer in self.layers:
            names = sorted(layer.inputs or ())
            for other in names[1:]:
                parent[find(other)] = find(names[0])
        return find


class LayerTracer(fx.Tracer):
    """Keeps subclasses of the layers prunectl lists as single nodes (timm's BatchNormAct2d is a
    BatchNorm2d followed by an activation; traced through, it would hide the norm in F.batch_norm),
    and Swin's and MaxViT's window attention, which the walk follows as a whole (tracing/window_attention.py)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if L.kind_of(module) != "other" or is_window_attention(module):
            return True
        # torch.fx keeps every torch.nn module whole; the composite ones (nn.TransformerEncoder and
        # its layers) are made of modules the walk knows, so they are traced through
        return super().is_leaf_module(module, qualified_name) and not _composite(module)

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        # nn.Transformer*'s fused fast path is chosen by checks on tensors (src.dim(), requires_grad)
        # that a symbolic trace cannot evaluate; with it off the checks stop at the first one
        # nn.TransformerEncoder's own forward asks src.is_nested: traced, its layers are called in
        # turn, which is what that forward does for a plain tensor (the walk then runs the real
        # model, and verification compares it). The swap is process-wide: two threads tracing at
        # once would see each other's; prunectl traces from one thread.
        encoder_forward = nn.TransformerEncoder.forward
        nn.TransformerEncoder.forward = _encoder_layers_in_turn
        try:
            with unfused_attention():
                return super().trace(root, concrete_args)
        finally:
            nn.TransformerEncoder.forward = encoder_forward


def _encoder_layers_in_turn(self: nn.TransformerEncoder, src: Any, mask: Any = None, src_key_padding_mask: Any = None,
                            is_causal: bool | None = None) -> Any:
    output = src
    for layer in self.layers:
        output = layer(output, src_mask=mask, is_causal=bool(is_causal), src_key_padding_mask=src_key_padding_mask)
    return self.norm(output) if self.norm is not None else output


def _composite(module: nn.Module) -> bool:
    return isinstance(module, (nn.TransformerEncoder, nn.TransformerEncoderLayer, nn.TransformerDecoder,
                               nn.TransformerDecoderLayer, nn.Transformer))


def symbolic_graph(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.GraphModule(model, LayerTracer().trace(model), type(model).__name__)
    except Exception as exc:
        raise UnsupportedError(f"{type(model).__name__}: torch.fx cannot trace it ({first_line(exc)}); "
                               "write a spec by hand (README: the spec format) and pass --spec") from None


def leaves(value: Any, kind: type = Flow) -> list[Any]:
    if isinstance(value, kind):
        return [value]
    if isinstance(value, (list, tuple)):
        return [f for item in value for f in leaves(item, kind)]
    if isinstance(value, dict):
        return [f for item in value.values() for f in leaves(item, kind)]
    return []


def flat_args(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in flat_args(item)]
    return [value]


def has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(has_tensor(v) for v in value.values())
    return False


def node_where(node: Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    path = module_path(node)
    return f"{path}:{node.name}" if path else f"forward:{node.name}"


def module_path(node: Node) -> str:
    """The qualified name of the module whose code made ``node`` ("" for the root's own forward)."""
    stack = node.meta.get("nn_module_stack") or {}
    # values are (module path, type); torch.export's keys are mangled ("L__self___layer1")
    last = list(stack.values())[-1] if stack else None
    return last[0] if isinstance(last, tuple) and last and isinstance(last[0], str) else ""


def node_description(node: Node) -> str:
    return op_name(node.target) if node.op == "call_function" else f".{node.target}()"


@contextmanager
def quiet_logs() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
