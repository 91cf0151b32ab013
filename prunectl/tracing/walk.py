"""Run a torch.fx graph once on a real input and follow the channels of every listed layer.

The walk is an ``fx.Interpreter``: each node is executed for real (so every shape and dim
argument is concrete), then ``rules`` turns the Flows of its inputs into the Flow of its
output. Conv/Linear/BatchNorm modules are *listed* (they become spec layers, in execution
order) and start a new Flow of their own. What the walk returns is plain data: the listed
layers with the sources of their inputs, the sources that reach the model output, and the
incidents (ops that touch channels in a way prunectl cannot cut).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import Node, map_aggregate

from .. import layers as L
from ..attention import self_attention_problem
from ..errors import UnsupportedError
from ..params import count_attributes
from .flow import Flow, Touch, broadcast_dim, merge, normalise_dim
from .rules import PARAMETER_OPS, function_flow, module_flow, op_name


@dataclass(frozen=True)
class TracedLayer:
    name: str
    kind: str  # "conv", "linear", "norm", "embedding", "parameter" or "count" (an int attribute)
    inputs: frozenset[str] | None  # listed layers feeding it (a prev sum); None: fixed input
    cat: tuple[frozenset[str], ...] | None = None  # its input is this channel concatenation
    dim: int | None = None  # a parameter: the axis that holds the channels


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


class _LayerTracer(fx.Tracer):
    """Keeps subclasses of the layers prunectl lists as single nodes (timm's BatchNormAct2d is a
    BatchNorm2d followed by an activation; traced through, it would hide the norm in F.batch_norm)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return L.kind_of(module) != "other" or super().is_leaf_module(module, qualified_name)


def symbolic_graph(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.GraphModule(model, _LayerTracer().trace(model), type(model).__name__)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UnsupportedError(f"{type(model).__name__}: torch.fx cannot trace it ({first}); "
                               "write a spec by hand (README: the spec format) and pass --spec") from None


class _Walker(fx.Interpreter):
    def __init__(self, graph_module: fx.GraphModule, root: nn.Module | None = None,
                 layer_nodes: dict[str, str] | None = None, modules: dict[str, nn.Module] | None = None):
        super().__init__(graph_module)
        self.root = graph_module if root is None else root  # the traced model, with its own attributes
        # torch.export graphs have no module calls: these op nodes compute a listed module
        self.layer_nodes, self.modules = layer_nodes or {}, modules or {}
        self.flows: dict[Node, Any] = {}
        self.walk = Walk()
        self.first_inputs: dict[str, frozenset[str] | None] = {}
        self.parameters = dict(graph_module.named_parameters())

    def run_node(self, node: Node) -> Any:
        result = super().run_node(node)
        if node.op == "output":
            for flow in _leaves(map_aggregate(node.args, self._flow_of)):
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
        incoming = _leaves(args) + _leaves(kwargs)
        if node.op == "call_module":
            module = self.submodules[node.target]
            if L.kind_of(module) != "other":
                return self._layer(node, module, incoming, result)
        if node.name in self.layer_nodes:
            name = self.layer_nodes[node.name]
            return self._layer(node, self.modules[name], incoming, result, name)
        sizes = _leaves(args, Size) + _leaves(kwargs, Size)
        if not incoming and not sizes:
            return None  # nothing pruned flows in, so nothing pruned flows out
        real_args, real_kwargs = self.fetch_args_kwargs_from_env(node)
        try:
            if sizes or not _has_tensor(result):
                return self._sizes(node, args, real_args, real_kwargs, incoming, sizes, result)
            if op_name(node.target) in ("view", "reshape"):
                self._check_reshape_sizes(node, args, kwargs, real_args, real_kwargs, result)
            if node.op == "call_module" and isinstance(module, nn.MultiheadAttention):
                return self._attention(node, module, real_args, real_kwargs, incoming, result)
            if node.op == "call_module":
                if len(incoming) != 1 or not isinstance(args[0], Flow):
                    raise Touch("takes pruned channels in more than one argument")
                return module_flow(module, real_args[0], args[0], result)
            if op_name(node.target) in PARAMETER_OPS:
                flow = self._parameter_operand(node, real_args, args, result)
                if flow is not None:
                    return flow
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

    def _parameter_operand(self, node: Node, real_args: tuple, args: tuple, result: Any) -> Flow | None:
        """``x * layer_scale``, ``x + pos_embedding``: a parameter with one entry per channel of ``x``
        is listed as a parameter entry that follows x's channels (None: not such a case)."""
        operands = list(node.args[:2])
        held = [i for i, a in enumerate(operands) if isinstance(a, Node) and a.op == "get_attr"
                and str(a.target) in self.parameters]
        flowing = [i for i, a in enumerate(args[:2]) if isinstance(a, Flow)]
        if len(held) != 1 or len(flowing) != 1 or not isinstance(result, torch.Tensor):
            return None
        held_node, value, flow = operands[held[0]], real_args[flowing[0]], args[flowing[0]]
        parameter = real_args[held[0]]
        d = broadcast_dim(flow, value.dim(), result.dim())
        axis = d - (result.dim() - parameter.dim())
        if axis < 0 or parameter.shape[axis] == 1 or value.shape[flow.dim] != result.shape[d]:
            return None  # channel-free, or a broadcast the element-wise rule reports
        name = str(held_node.target)
        if parameter.shape[axis] != value.shape[flow.dim]:
            raise Touch(f"combines the channels with parameter {name} of shape {tuple(parameter.shape)}")
        if flow.composite:
            raise Touch(f"combines a concatenation of pruned channels with parameter {name}")
        if len(held_node.users) != 1 or name in self.first_inputs:
            raise Touch(f"uses parameter {name}, which is also used elsewhere (it can follow one channel space)")
        self.first_inputs[name] = flow.sources
        self.walk.layers.append(TracedLayer(name, "parameter", flow.sources, dim=axis))
        return flow.at(d)

    def _sizes(self, node: Node, args: Any, real_args: tuple, real_kwargs: dict, incoming: list[Flow],
               sizes: list[Size], result: Any) -> Any:
        """Shapes read from pruned tensors, and what is done with them."""
        name = op_name(node.target)
        if not sizes:  # x.shape, x.size(d): a number the hard model reads smaller
            flow = args[0] if isinstance(args[0], Flow) else None
            if flow is None:
                return None
            if name == "getattr" and real_args[1] == "shape" or name == "size" and len(real_args) == 1 \
                    and "dim" not in real_kwargs:
                return Size(flow.sources, flow.dim)
            if name == "size":
                dim = real_args[1] if len(real_args) > 1 else real_kwargs["dim"]
                return Size(flow.sources) if normalise_dim(int(dim), real_args[0].dim()) == flow.dim else None
            return None  # x.dim(), x.dtype, x.device: not the channel count
        if name == "getitem" and isinstance(args[0], Size) and args[0].dim is not None and len(sizes) == 1:
            index, length = real_args[1], len(real_args[0])
            if isinstance(index, int):
                return Size(args[0].sources) if normalise_dim(index, length) == args[0].dim else None
            if isinstance(index, slice):
                kept = list(range(length))[index]
                return Size(args[0].sources, kept.index(args[0].dim)) if args[0].dim in kept else None
        if name in ("view", "reshape") and _has_tensor(result) and isinstance(args[0], Flow):
            self._check_reshape_sizes(node, args, {}, real_args, real_kwargs, result)
            return function_flow(name, real_args, real_kwargs, args, {}, result)
        raise Touch(f"uses the number of pruned channels ({_describe(node)}), which the pruned model reads smaller")

    def _check_reshape_sizes(self, node: Node, args: Any, kwargs: Any, real_args: tuple, real_kwargs: dict,
                             result: Any) -> None:
        """``x.view(n, C, -1)`` may size the channel dim only with -1 or x's own channel count: a
        number fixed in the model's code (ViT's ``self.hidden_dim``) would not shrink with it."""
        flow = args[0]
        if not isinstance(flow, Flow) or not isinstance(result, torch.Tensor):
            return
        moved = function_flow(op_name(node.target), real_args, real_kwargs, args, kwargs, result)
        entries = list(node.args[1:])
        flows = list(args[1:])
        if len(entries) == 1 and isinstance(entries[0], (list, tuple)):
            entries, flows = list(entries[0]), list(flows[0])
        if moved.dim >= len(entries):
            return
        entry, size = entries[moved.dim], flows[moved.dim]
        if isinstance(size, Size) and size.dim is None and size.sources == flow.sources and moved.factor == flow.factor:
            return
        if entry == -1 and sum(1 for e in entries if e == -1) == 1:
            return
        if isinstance(entry, int) and not isinstance(entry, bool) and moved.factor == flow.factor \
                and self._count_attribute(node, entry, flow):
            return
        raise Touch(f"reshapes pruned channels to a channel count fixed in the model's code "
                    f"({result.shape[moved.dim]}); the pruned model would need it smaller")

    def _count_attribute(self, node: Node, value: int, flow: Flow) -> bool:
        """A reshape to a fixed channel count that the running module keeps in exactly one int
        attribute (ViT's ``self.hidden_dim``): list that attribute, so the hard model gets it smaller."""
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack)[-1] if stack else ""
        owner = self.root if not path else self.root.get_submodule(path)
        names = [key for key, held in count_attributes(owner).items() if held == value]
        if len(names) != 1 or not self._reads_attribute(node, owner, names[0]):
            return False
        name = f"{path}.{names[0]}" if path else names[0]
        if name in self.first_inputs:
            if self.first_inputs[name] != flow.sources:
                raise Touch(f"sizes two different channel spaces with the attribute {name}")
            return True
        self.first_inputs[name] = flow.sources
        self.walk.layers.append(TracedLayer(name, "count", flow.sources))
        return True

    def _reads_attribute(self, node: Node, owner: nn.Module, attr: str) -> bool:
        """Whether ``node``'s arguments come from ``owner.attr`` and not from an equal literal: trace
        again with the attribute set to an unlikely number and look for it in the same node."""
        marker = 1_000_003 + getattr(owner, attr)
        original = getattr(owner, attr)
        try:
            setattr(owner, attr, marker)
            graph = _LayerTracer().trace(self.root)
        except Exception:
            return False
        finally:
            setattr(owner, attr, original)
        again = next((n for n in graph.nodes if n.name == node.name), None)
        return again is not None and marker in _flat_args(again.args)

    def _attention(self, node: Node, module: nn.MultiheadAttention, real_args: tuple, real_kwargs: dict,
                   incoming: list[Flow], result: Any) -> list[Flow | None]:
        """Self-attention on the residual stream: ``in_proj_weight``'s input columns follow the
        stream's channels (a parameter entry, dim 1) and ``out_proj`` writes a new channel space;
        the heads stay whole (attention.py)."""
        name = str(node.target)
        nodes = tuple(node.args[:3]) + tuple(node.kwargs[k] for k in ("query", "key", "value") if k in node.kwargs)
        problem = self_attention_problem(module, real_args, real_kwargs, nodes)
        flow = incoming[0]
        query = real_args[0] if real_args else real_kwargs.get("query")
        if problem is None and (flow.composite or flow.dim != query.dim() - 1 or flow.factor != 1):
            problem = "reads pruned channels from a dim other than its last"
        if problem is None and name in self.first_inputs:
            problem = "is called more than once (shared weights)"
        if problem is not None:
            raise Touch(problem)
        self.first_inputs[name] = flow.sources
        self.walk.layers.append(TracedLayer(f"{name}.in_proj_weight", "parameter", flow.sources, dim=1))
        self.walk.layers.append(TracedLayer(f"{name}.out_proj", "linear", None))
        return [Flow(frozenset({f"{name}.out_proj"}), result[0].dim() - 1), None]

    def _held_parameter(self, node: Any) -> str | None:
        """The parameter a node is, or expands (ViT's ``class_token.expand(n, -1, -1)``), used only there."""
        if isinstance(node, Node) and node.op in ("call_method", "call_function") and op_name(node.target) == "expand" \
                and len(node.users) == 1:
            node = node.args[0]
        if isinstance(node, Node) and node.op == "get_attr" and str(node.target) in self.parameters:
            return str(node.target) if len(node.users) == 1 else None
        return None

    def _parameter_in_cat(self, node: Node, real_args: tuple, real_kwargs: dict, args: tuple, result: Any) -> Flow | None:
        """``cat([class_token.expand(n, -1, -1), x], dim=1)``: tokens joined along another dim than the
        channels; a parameter among them with one entry per channel follows x's channels."""
        tensors, flows = real_args[0], args[0]
        dim = normalise_dim(int(real_args[1] if len(real_args) > 1 else real_kwargs.get("dim", 0)), result.dim())
        placed = [f for f in flows if isinstance(f, Flow)]
        if not placed or len(placed) == len(flows) or any(f.composite or f.dim == dim for f in placed):
            return None
        if len({(f.dim, f.factor) for f in placed}) > 1:
            return None
        channels = next(t.shape[f.dim] for t, f in zip(tensors, flows) if isinstance(f, Flow))
        d = placed[0].dim
        held = []
        for operand, value, flow in zip(node.args[0], tensors, flows):
            if isinstance(flow, Flow):
                continue
            name = self._held_parameter(operand)
            if name is None or name in self.first_inputs:
                return None  # a fixed tensor the concatenation rule reports
            parameter = self.parameters[name]
            axis = d - (value.dim() - parameter.dim())
            if axis < 0 or parameter.shape[axis] != channels:
                raise Touch(f"joins pruned channels with parameter {name} of shape {tuple(parameter.shape)}")
            held.append((name, axis))
        flow = merge(placed, d)
        for name, axis in held:
            self.first_inputs[name] = flow.sources
            self.walk.layers.append(TracedLayer(name, "parameter", flow.sources, dim=axis))
        return flow

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
        op = type(self.submodules[node.target]).__name__ if node.op == "call_module" else _describe(node)
        self.walk.incidents.append(Incident(_where(node), op, str(touch), sources))


def walk_graph(graph_module: fx.GraphModule, example: torch.Tensor, root: nn.Module | None = None, *,
               args: tuple[Any, ...] | None = None, layer_nodes: dict[str, str] | None = None,
               modules: dict[str, nn.Module] | None = None) -> Walk:
    """``root``: the traced model (its own attributes); ``args``: all placeholder values when there
    are more than the example (torch.export's lifted parameters); ``layer_nodes``/``modules``: op
    nodes that compute a listed module (capture.py)."""
    walker = _Walker(graph_module, root, layer_nodes, modules)
    with torch.no_grad():
        walker.run(*(args if args is not None else (example,)))
    return walker.walk


def _leaves(value: Any, kind: type = Flow) -> list[Any]:
    if isinstance(value, kind):
        return [value]
    if isinstance(value, (list, tuple)):
        return [f for item in value for f in _leaves(item, kind)]
    if isinstance(value, dict):
        return [f for item in value.values() for f in _leaves(item, kind)]
    return []


def _flat_args(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flat_args(item)]
    return [value]


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return False


def _where(node: Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    # values are (module path, type); torch.export's keys are mangled ("L__self___layer1")
    last = list(stack.values())[-1] if stack else None
    path = last[0] if isinstance(last, tuple) and last and isinstance(last[0], str) else ""
    return f"{path}:{node.name}" if path else f"forward:{node.name}"


def _describe(node: Node) -> str:
    return op_name(node.target) if node.op == "call_function" else f".{node.target}()"
