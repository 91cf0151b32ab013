"""Run a torch.fx graph once on a real input and follow the channels of every listed layer.

The walk is an ``fx.Interpreter``: each node is executed for real (so every shape and dim
argument is concrete), then ``rules`` turns the Flows of its inputs into the Flow of its
output. Conv/Linear/BatchNorm modules are *listed* (they become spec layers, in execution
order) and start a new Flow of their own. What the walk returns is plain data: the listed
layers with the sources of their inputs, the sources that reach the model output, and the
incidents (ops that touch channels in a way prunectl cannot cut).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import Node, map_aggregate

from ..errors import UnsupportedError
from ..layers import kinds as L
from ..layers.window_attention import is_window_attention
from .flow import Flow, Touch
from .followers import ChannelFollowers
from .graph import Incident, Size, TracedLayer, Walk, has_tensor, leaves, node_description, node_where
from .heads import HeadFollowers, parts_flow
from .rules import PARAMETER_OPS, function_flow, module_flow, op_name
from .split_producers import SplitFollowers, settle_parts
from .window_attention import WindowAttentionFollower

__all__ = ["walk_graph"]


class _Walker(ChannelFollowers, HeadFollowers, SplitFollowers, WindowAttentionFollower, fx.Interpreter):
    def __init__(self, graph_module: fx.GraphModule, root: nn.Module | None = None,
                 layer_nodes: dict[str, str] | None = None, modules: dict[str, nn.Module] | None = None,
                 example: torch.Tensor | None = None):
        super().__init__(graph_module)
        self.example = example  # the input, for a re-capture (followers._reads_attribute)
        self.root = graph_module if root is None else root  # the traced model, with its own attributes
        # torch.export graphs have no module calls: these op nodes compute a listed module
        self.layer_nodes, self.modules = layer_nodes or {}, modules or {}
        self.flows: dict[Node, Any] = {}
        self.walk = Walk()
        self.first_inputs: dict[str, frozenset[str] | None] = {}
        self.parameters = dict(graph_module.named_parameters())
        # split producers (split_producers.py)
        self.splits, self.part_heads, self.split_nodes, self.slices, self.slice_nodes = {}, {}, {}, {}, {}
        self.counted_slices: set[str] = set()

    def run_node(self, node: Node) -> Any:
        result = super().run_node(node)
        if node.op == "output":
            for flow in leaves(map_aggregate(node.args, self._flow_of)):
                self.walk.output_sources |= flow.sources
            return result
        self.flows[node] = self._node_flow(node, result)
        return result

    def _flow_of(self, value: Any) -> Any:
        return self.flows.get(value) if isinstance(value, Node) else None

    def _node_flow(self, node: Node, result: Any) -> Any:
        if node.op in ("placeholder", "get_attr"):
            return None
        args = map_aggregate(node.args, self._flow_of)
        kwargs = map_aggregate(node.kwargs, self._flow_of)
        incoming = leaves(args) + leaves(kwargs)
        if node.op == "call_module":
            module = self.submodules[node.target]
            if L.kind_of(module) not in ("other", "attention"):  # attention: followers._attention
                return self._layer(node, module, incoming, result)
        if node.name in self.layer_nodes:
            name = self.layer_nodes[node.name]
            return self._layer(node, self.modules[name], incoming, result, name)
        sizes = leaves(args, Size) + leaves(kwargs, Size)
        if not incoming and not sizes:
            return None  # nothing pruned flows in, so nothing pruned flows out
        real_args, real_kwargs = self.fetch_args_kwargs_from_env(node)
        try:
            if op_name(node.target) in ("view", "reshape") and node.op != "call_module":
                heads = self._heads_split(node, args, real_args, result)
                if heads is not None:
                    return heads
            if any(flow.parts_dim is not None for flow in incoming):
                return parts_flow(node, real_args, real_kwargs, args, kwargs, result)
            if sizes or not has_tensor(result):
                return self._sizes(node, args, real_args, real_kwargs, incoming, sizes, result)
            if op_name(node.target) in ("view", "reshape"):
                self._check_reshape_sizes(node, args, kwargs, real_args, real_kwargs, result)
            if node.op == "call_module" and isinstance(module, nn.MultiheadAttention):
                return self._attention(node, module, real_args, real_kwargs, incoming, result)
            if node.op == "call_module" and is_window_attention(module):
                return self._window_attention(node, module, real_args, real_kwargs, incoming, result)
            if node.op == "call_module":
                if len(incoming) != 1 or not isinstance(args[0], Flow):
                    raise Touch("takes pruned channels in more than one argument")
                return module_flow(module, real_args[0], args[0], result)
            if op_name(node.target) in PARAMETER_OPS:
                flow = self._parameter_operand(node, real_args, args, result)
                if flow is not None:
                    return flow
            if op_name(node.target) in ("scaled_dot_product_attention", "matmul"):
                flow = self._grouped_attention(op_name(node.target), real_args, real_kwargs, args, kwargs, result)
                if flow is not None:
                    return flow
            parts = self._split_parts(node, real_args, real_kwargs, args, result) or \
                self._slice_part(node, real_args, real_kwargs, args, result)
            if parts is not None:
                return parts
            if op_name(node.target) in ("cat", "concat", "concatenate") and isinstance(args[0], (list, tuple)):
                flow = self._parameter_in_cat(node, real_args, real_kwargs, args, result)
                if flow is not None:
                    return flow
            return function_flow(op_name(node.target), real_args, real_kwargs, args, kwargs, result)
        except Touch as touch:
            self._incident(node, touch, incoming + [Flow(size.sources, 0) for size in sizes])
            return None
        except (IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
            self._incident(node, Touch(f"has arguments the tracer cannot read ({type(exc).__name__})"),
                           incoming + [Flow(size.sources, 0) for size in sizes])
            return None

    def _layer(self, node: Node, module: nn.Module, incoming: list[Flow], result: Any,
               name: str | None = None) -> Flow | None:
        name, kind = name or str(node.target), L.kind_of(module)
        flow = incoming[0] if len(incoming) == 1 else None
        if len(incoming) > 1:
            self._incident(node, Touch("takes pruned channels in more than one argument"), incoming)
        if kind == "embedding":
            if flow is not None:
                self._incident(node, Touch("looks up indices computed from pruned channels"), incoming)
            flow = None
        try:
            L.check_supported(name, module)
        except UnsupportedError as exc:
            self._incident(node, Touch(str(exc)), incoming)
            return None
        inputs = flow.sources if flow is not None else None
        ndim = result.dim() if isinstance(result, torch.Tensor) else 0
        channel_dim = L.channel_dim(module, ndim)
        if flow is not None and flow.dim < channel_dim and kind == "norm" and L.statistic(module) in ("layer", "rms") \
                and channel_dim == ndim - 1 and not flow.composite:
            # a norm over the last dim only (Qwen3's q_norm over head_dim, the heads in dim 2): the
            # same computation for every channel of the flow, which passes through it unlisted
            return flow
        if flow is not None and flow.dim != channel_dim:
            self._incident(node, Touch(f"reads channels from dim {flow.dim}, not its channel dim {channel_dim}"),
                           incoming)
            inputs = flow = None
        if flow is not None and flow.composite and kind == "conv" and module.groups > 1:
            self._incident(node, Touch("is a grouped conv reading a concatenation"), incoming)
            inputs = flow = None
        if flow is not None and flow.composite and L.norm_blocks(module) > 1:
            self._incident(node, Touch("is a GroupNorm reading a concatenation"), incoming)
            inputs = flow = None
        if kind == "norm" and inputs is None:
            return None  # a norm over fixed channels (the model input) is not pruned: not listed
        if name in self.first_inputs:  # one module called twice: both inputs and its output are tied
            earlier = self.first_inputs[name] or frozenset()
            tied = [Flow(earlier | (inputs or frozenset()) | {name}, channel_dim)]
            self._incident(node, Touch("is called more than once (shared weights)"), tied)
            return Flow(frozenset({name}), channel_dim)
        self.first_inputs[name] = inputs
        self.walk.layers.append(TracedLayer(name, kind, inputs, flow.parts if flow is not None else None))
        if kind == "norm":  # the norm's channels are its input's channels (a concatenation stays one)
            return Flow(frozenset({name}), channel_dim, flow.factor, composite=flow.composite)
        return Flow(frozenset({name}), channel_dim)

    def _incident(self, node: Node, touch: Touch, incoming: list[Flow]) -> None:
        sources = frozenset().union(*(f.sources for f in incoming))
        op = type(self.submodules[node.target]).__name__ if node.op == "call_module" else node_description(node)
        self.walk.incidents.append(Incident(node_where(node), op, str(touch), sources))


def walk_graph(graph_module: fx.GraphModule, example: torch.Tensor, root: nn.Module | None = None, *,
               args: tuple[Any, ...] | None = None, layer_nodes: dict[str, str] | None = None,
               modules: dict[str, nn.Module] | None = None) -> Walk:
    """``root``: the traced model (its own attributes); ``args``: all placeholder values when there
    are more than the example (torch.export's lifted parameters); ``layer_nodes``/``modules``: op
    nodes that compute a listed module (capture.py)."""
    walker = _Walker(graph_module, root, layer_nodes, modules, example)
    with torch.no_grad():
        walker.run(*(args if args is not None else (example,)))
    settle_parts(walker.walk, walker.splits, walker.part_heads, walker.slices, walker.counted_slices)
    walker.walk.incidents += walker.walk.untied()
    return walker.walk
