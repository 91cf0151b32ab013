"""How the walk follows channels into what is not a listed layer: parameters added or multiplied
along the channels (layer scale, position embedding, class token), shapes read from pruned
tensors and the reshapes they size (with the int attributes that hold them, ViT's hidden_dim),
and self-attention reading the residual stream. A mixin of the walk's interpreter (walk.py).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.fx.node import Node

from ..layers import kinds as L
from ..layers.attention import self_attention_problem
from ..layers.params import held_count, int_counts, int_counts_read_by_forward, with_count
from ..models.hf_provider import is_hf_model
from .flow import Flow, Touch, broadcast_dim, merge, normalise_dim
from .graph import (
    Incident,
    LayerTracer,
    Size,
    TracedLayer,
    flat_args,
    has_tensor,
    module_path,
    node_description,
    node_where,
)
from .hf_export import hf_export
from .rules import function_flow, op_name
from .tables import carries_index, chain_to_parameter, view_sizes


class ChannelFollowers:
    """Methods of ``walk._Walker`` (it provides ``parameters``, ``first_inputs``, ``walk``, ``root``)."""

    def _parameter_operand(self, node: Node, real_args: tuple, args: tuple, result: Any) -> Flow | None:
        """``x * layer_scale``, ``x + pos_embedding``: a parameter with one entry per channel of ``x``
        is listed as a parameter entry that follows x's channels (None: not such a case)."""
        operands = list(node.args[:2])
        held = [i for i, a in enumerate(operands) if self._parameter_node(a)[0] is not None]
        flowing = [i for i, a in enumerate(args[:2]) if isinstance(a, Flow)]
        if not held and len(flowing) == 1 and isinstance(result, torch.Tensor):
            return self._table_operand(node, real_args, args, flowing[0], result)
        if len(held) != 1 or len(flowing) != 1 or not isinstance(result, torch.Tensor):
            return None
        (held_node, shape_attribute), value, flow = self._parameter_node(operands[held[0]]), real_args[flowing[0]], \
            args[flowing[0]]
        operand = real_args[held[0]]  # the parameter, or its view (timm's gamma.reshape(1, -1, 1, 1))
        d = broadcast_dim(flow, value.dim(), result.dim())
        axis = d - (result.dim() - operand.dim())
        if axis < 0 or operand.shape[axis] == 1 or value.shape[flow.dim] != result.shape[d]:
            return None  # channel-free, or a broadcast the element-wise rule reports
        name = str(held_node.target)
        if operand.shape[axis] != value.shape[flow.dim]:
            raise Touch(f"combines the channels with parameter {name} of shape {tuple(operand.shape)}")
        if held_node is not operands[held[0]]:  # a view: the channels are the vector's one dim
            axis = next(i for i, size in enumerate(self.parameters[name].shape) if size != 1)
        moved = self._listed_parameter(name, flow, axis, d, shared=len(held_node.users) != 1)
        if shape_attribute is not None:  # the view's size, held by the module: it gets the kept count
            if shape_attribute in self.first_inputs:
                raise Touch(f"views parameter {name} to the shape {shape_attribute}, which also sizes another view")
            self.first_inputs[shape_attribute] = flow.sources
            self.walk.layers.append(TracedLayer(shape_attribute, "count", flow.sources))
        return moved

    def _table_operand(self, node: Node, real_args: tuple, args: tuple, flowing: int, result: Any) -> Flow | None:
        """``scores + table[index].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)``: a per-head bias
        gathered from a parameter table (timm's Swin relative position bias). The parameter is
        listed as following the heads along the axis that becomes them: checked by running the
        chain from the table again on a table whose entries are their own index along that axis
        (the chain moves and copies entries, never mixes two heads' entries, exactly when each
        output entry along the heads dim holds its own index)."""
        other = 1 - flowing
        operand, flow, value = node.args[other], args[flowing], real_args[flowing]
        chain = chain_to_parameter(operand, set(self.parameters))
        if chain is None:
            return None
        source, steps = chain
        name = str(source.target)
        table = self.parameters[name]
        d = broadcast_dim(flow, value.dim(), result.dim())
        fixed = real_args[other]
        axis_out = d - (result.dim() - fixed.dim())
        channels = value.shape[flow.dim]
        if axis_out < 0 or fixed.shape[axis_out] != channels or value.shape[flow.dim] != result.shape[d]:
            return None
        matches = [axis for axis, size in enumerate(table.shape) if size == channels
                   and carries_index(steps, source, table, axis, self.fetch_attr, fixed.dim(), axis_out)]
        if len(matches) != 1:
            return None
        return self._listed_parameter(name, flow, matches[0], d)

    def _listed_parameter(self, name: str, flow: Flow, axis: int, d: int, shared: bool = False) -> Flow:
        """List parameter ``name`` as following ``flow``'s channels along ``axis``; the op's Flow."""
        if flow.composite:
            raise Touch(f"combines a concatenation of pruned channels with parameter {name}")
        if shared or name in self.first_inputs:
            raise Touch(f"uses parameter {name}, which is also used elsewhere (it can follow one channel space)")
        self.first_inputs[name] = flow.sources
        self.walk.layers.append(TracedLayer(name, "parameter", flow.sources, dim=axis))
        return flow.at(d)

    def _parameter_node(self, operand: Any) -> tuple[Node | None, str | None]:
        """The get_attr node of a parameter ``operand`` is, or is a view of: ``p.view(1, -1, 1, 1)``,
        ``p.reshape(...)`` or ``p.unsqueeze(d)`` of a vector, used only there; with the attribute
        the view's size comes from, when it is not a -1. The -1 makes the view follow the kept count;
        a literal size does only when the module holds it in an attribute the hard model can be given
        (timm's metaformer ``Scale``: ``self.scale.view(self.shape)``, shape ``(C, 1, 1)``), found as
        for a reshape's head count (``_reads_attribute``). (None, None): not such a parameter."""
        if isinstance(operand, Node) and operand.op == "get_attr" and str(operand.target) in self.parameters:
            return operand, None
        if not (isinstance(operand, Node) and operand.op in ("call_method", "call_function") and operand.args
                and op_name(operand.target) in ("view", "reshape", "unsqueeze") and len(operand.users) == 1):
            return None, None
        source = operand.args[0]
        if not (isinstance(source, Node) and source.op == "get_attr" and str(source.target) in self.parameters):
            return None, None
        parameter = self.parameters[str(source.target)]
        if sum(1 for size in parameter.shape if size != 1) != 1:
            return None, None  # only a vector's view has an unambiguous channel dim
        if op_name(operand.target) == "unsqueeze":
            return source, None
        sizes = view_sizes(operand)
        if any(not isinstance(size, int) for size in sizes):
            return None, None
        if sizes.count(-1) == 1:
            return source, None
        attribute = self._shape_attribute(operand, sizes, max(parameter.shape))
        return (None, None) if attribute is None else (source, attribute)

    def _shape_attribute(self, view: Node, sizes: list[int], channels: int) -> str | None:
        """The one tuple attribute of the view's module equal to its literal ``sizes`` (one channel
        count among 1s) that the view reads, by its full name; None: a size fixed in the code."""
        if [size for size in sizes if size != 1] != [channels]:
            return None
        path = module_path(view)
        try:
            owner = self.root.get_submodule(path)
        except AttributeError:
            return None
        names = [key for key, value in vars(owner).items()
                 if isinstance(value, tuple) and list(value) == sizes and not key.startswith("_")]
        names = [key for key in names if self._reads_attribute(view, owner, key)]
        if len(names) != 1:
            return None
        return f"{path}.{names[0]}" if path else names[0]

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
        if name in ("view", "reshape") and has_tensor(result) and isinstance(args[0], Flow):
            self._check_reshape_sizes(node, args, {}, real_args, real_kwargs, result)
            return function_flow(name, real_args, real_kwargs, args, {}, result)
        raise Touch(f"uses the number of pruned channels ({node_description(node)}), "
                    f"which the pruned model reads smaller")

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
        elif len(entries) == 1 and isinstance(entries[0], Node) and isinstance(real_args[1], (list, tuple)):
            # a shape computed in the code (BERT-style ``x.size()[:-2] + (self.all_head_size,)``): its
            # values, each of unknown origin unless the walk gave it a Size
            computed = flows[0] if isinstance(flows[0], (list, tuple)) else ()
            entries = list(real_args[1])
            flows = list(computed) if len(computed) == len(entries) else [None] * len(entries)
        if moved.dim >= len(entries):
            return
        entry, size = entries[moved.dim], flows[moved.dim]
        if isinstance(size, Size) and size.dim is None and size.sources == flow.sources and moved.factor == flow.factor:
            return
        if entry == -1 and sum(1 for e in entries if e == -1) == 1:
            return
        if _repeats_channels(node, flow, real_args[0], moved):
            return
        if isinstance(entry, int) and not isinstance(entry, bool) and self._same_layout(flow, moved) \
                and self._count_attribute(node, entry, flow):
            return
        if moved.dim == result.dim() - 1 and self._own_width(node, entry):
            return
        sizes = [size for size in flat_args(real_args[1:]) if isinstance(size, int)]
        if tuple(result.shape) == tuple(real_args[0].shape) and entry == result.shape[moved.dim] \
                and sizes.count(-1) <= 1 and moved.factor == flow.factor:
            # the same shape (GPT-2's ``view((-1,) + input_shape[1:] + (x.size(-1),))``, a literal in the
            # exported graph): read from the tensor it is the identity; a literal that would not shrink
            # makes the hard model's view fail or give another shape (the inferred dim takes the
            # missing channels), which the proof reports, never a silent change
            return
        raise Touch(f"reshapes pruned channels to a channel count fixed in the model's code "
                    f"({result.shape[moved.dim]}); the pruned model would need it smaller")

    def _own_width(self, node: Node, entry: Any) -> bool:
        """A linear layer's own reshapes around its matmul (transformers' Conv1D: ``x.view(-1, nx)``,
        then ``view(..., nf)``; torch.export writes ``x.size(-1)`` as a number): the cut resizes the
        layer, and with it the widths its code reads."""
        try:
            owner = self.root.get_submodule(module_path(node))
        except AttributeError:
            return False
        return L.linear_form(owner) is not None and entry in (L.in_width(owner), L.out_width(owner))

    def _same_layout(self, flow: Flow, moved: Flow) -> bool:
        """The reshape keeps each channel's span, or merges attention heads back with their
        head_dim (timm's ``reshape(B, N, self.attn_dim)``: the attribute counts head_dim per head)."""
        if moved.factor == flow.factor:
            return True
        return flow.factor == 1 and all(self._heads_of(name)[1] == moved.factor for name in flow.sources)

    def _count_attribute(self, node: Node, value: int, flow: Flow, by_name: bool = False) -> bool:
        """A reshape to a fixed channel count that the running module keeps in exactly one int
        attribute (ViT's ``self.hidden_dim``): list that attribute, so the hard model gets it smaller.
        ``by_name``: the op cannot run with the attribute changed (a split's size), so the attribute is
        the one of that value the module's forward reads by name (split_producers.py)."""
        path = module_path(node)
        try:
            owner = self.root.get_submodule(path)
        except AttributeError:
            return False
        # several attributes may hold the number (BERT's layer_idx 4 and num_attention_heads 4):
        # the one the re-trace shows the reshape reading is it
        if by_name:
            names = int_counts_read_by_forward(owner, value)
        else:
            names = [key for key in int_counts(owner, value) if self._reads_attribute(node, owner, key)]
        if len(names) != 1:
            return False
        name = f"{path}.{names[0]}" if path else names[0]
        if name in self.first_inputs:
            earlier = self.first_inputs[name] or frozenset()
            if earlier != flow.sources:
                heads = {source: self._heads_of(source) for source in earlier | flow.sources}
                if len(set(heads.values()) - {(None, None)}) != 1 or any(h[0] is None for h in heads.values()):
                    raise Touch(f"sizes two different channel spaces with the attribute {name}")
                # BERT's num_attention_heads sizes q, k and v: fine if they meet (attention) later
                self.walk.ties.append(Incident(node_where(node), node_description(node),
                                               f"sizes heads that are never combined with the attribute {name}",
                                               earlier | flow.sources))
            return True
        self.first_inputs[name] = flow.sources
        self.walk.layers.append(TracedLayer(name, "count", flow.sources))
        return True

    def _reads_attribute(self, node: Node, owner: nn.Module, attr: str) -> bool:
        """Whether ``node``'s arguments come from ``owner.attr`` and not from an equal literal: trace
        again with the attribute set to an unlikely number and look for it in the same node."""
        original = getattr(owner, attr)
        marker = 1_000_003 + held_count(original)
        cache = self.__dict__.setdefault("_marked_graphs", {})  # BERT's q, k and v read one attribute
        if (id(owner), attr) not in cache:
            try:
                setattr(owner, attr, with_count(original, marker))
                # the same capturer as the walk's graph, so that node names match
                cache[id(owner), attr] = hf_export(self.root, self.example).graph_module.graph \
                    if is_hf_model(self.root) else LayerTracer().trace(self.root)
            except Exception:
                cache[id(owner), attr] = None
            finally:
                setattr(owner, attr, original)
        graph = cache[id(owner), attr]
        again = None if graph is None else next((n for n in graph.nodes if n.name == node.name), None)
        return again is not None and marker in _values_feeding(again)

    def _attention(self, node: Node, module: nn.MultiheadAttention, real_args: tuple, real_kwargs: dict,
                   incoming: list[Flow], result: Any) -> list[Flow | None]:
        """Self-attention on the residual stream: the attention is a listed layer whose inputs
        (``in_proj_weight``'s columns) follow the stream's channels and whose outputs are its heads,
        read by ``out_proj``, which writes a new channel space (layers/attention.py). When the attention
        weights are used, their mean over heads would change: the heads are pinned."""
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
        self.walk.layers.append(TracedLayer(name, "attention", flow.sources))
        self.walk.layers.append(TracedLayer(f"{name}.out_proj", "linear", frozenset({name})))
        if result[1] is not None and _weights_used(node):
            self._incident(node, Touch("returns attention weights averaged over its heads, which are used"),
                           [Flow(frozenset({name}), 0)])
        return [Flow(frozenset({f"{name}.out_proj"}), result[0].dim() - 1), None]

    def _held_parameter(self, node: Any) -> str | None:
        """The parameter a node is, or expands (ViT's ``class_token.expand(n, -1, -1)``), used only there."""
        if isinstance(node, Node) and node.op in ("call_method", "call_function") and op_name(node.target) == "expand" \
                and len(node.users) == 1:
            node = node.args[0]
        if isinstance(node, Node) and node.op == "get_attr" and str(node.target) in self.parameters:
            return str(node.target) if len(node.users) == 1 else None
        return None

    def _parameter_in_cat(self, node: Node, real_args: tuple, real_kwargs: dict, args: tuple,
                          result: Any) -> Flow | None:
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


def _repeats_channels(node: Node, flow: Flow, value: torch.Tensor, moved: Flow) -> bool:
    """``x[:, :, None].expand(b, c, n, ...).reshape(b, c * n, ...)``: each channel repeated n times
    in place (transformers' ``repeat_kv``). The merged size is the input's own channel count times
    n in any code that writes this (a torch.export graph holds it as a literal); a literal that
    would not shrink makes the hard model's reshape fail, which the proof reports, never a silent
    change."""
    source = node.args[0] if node.args else None
    if not (isinstance(source, Node) and op_name(source.target) == "expand" and source.args
            and isinstance(source.args[0], Node) and op_name(source.args[0].target) == "unsqueeze"):
        return False
    unsqueezed = source.args[0].args[1] if len(source.args[0].args) > 1 else None
    d = flow.dim
    return isinstance(unsqueezed, int) and normalise_dim(unsqueezed, value.dim()) == d + 1 \
        and moved.factor == flow.factor * value.shape[d + 1]


def _weights_used(node: Node) -> bool:
    """Whether anything but ``node[0]`` (the attention output) reads the attention call's result."""
    for user in node.users:
        is_output = user.op == "call_function" and op_name(user.target) == "getitem" and user.args[1] == 0
        if not is_output and (user.op != "call_function" or op_name(user.target) != "getitem" or user.users):
            return True
    return False


def _values_feeding(node: Node, depth: int = 3) -> list[Any]:
    """The constants in a node's arguments and, a few steps up, in the nodes computing them (a
    shape built as ``x.size()[:-2] + (self.all_head_size,)`` holds the attribute two nodes up)."""
    values = []
    for value in flat_args(node.args):
        if isinstance(value, Node):
            if depth > 1:
                values += _values_feeding(value, depth - 1)
        else:
            values.append(value)
    return values
