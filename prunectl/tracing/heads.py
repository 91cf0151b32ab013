"""Attention heads written as reshapes: a projection's outputs split into (heads, head_dim).

timm's ``Attention`` reshapes its fused qkv Linear to ``(B, N, 3, num_heads, head_dim)``, a
transformers BERT layer views each of query/key/value as ``(B, L, -1, head_size)``. The
channel dim is split, which the shape rules refuse (flow.py); here the split is read as
*heads*: the producer's outputs are ``parts`` blocks (3 for a fused qkv, else 1) of ``heads``
heads of ``head_dim`` channels, a head is kept or cut whole, and from the split on the Flow's
channel dim indexes heads (``head_dim`` stays a free inner dim; the parts dim is tracked until
an unbind or index takes it apart). Merged back (``transpose(1, 2).reshape(B, N, -1)``), each
head spans ``head_dim`` consecutive features: the reader (proj, output.dense) sees factor
head_dim, as after a flatten. q, k and v meet in matmuls and ``scaled_dot_product_attention``
with the heads as a batch dim (rules.py), so their head spaces merge like a residual sum.

Accepted only when the producer is one listed conv/linear whose output goes straight and only
into this reshape, the split is into (heads, head_dim) or (parts, heads, head_dim) with
head_dim > 1, and the head count in the reshape is -1 or an int attribute the module reads
(timm's ``num_heads``, listed as an attribute entry so the pruned model reads the kept count).

Grouped-query attention (Llama, Qwen, Mistral: ``num_key_value_heads`` < ``num_attention_heads``)
shares each key/value head among ``g`` consecutive query heads, by repeating k and v
(``repeat_kv``: expand + reshape, which the shape rules read as factor g) or by
``scaled_dot_product_attention(..., enable_gqa=True)``. There the query projection is regrouped:
its channels become the KV groups, ``heads // g`` of ``g * head_dim`` outputs each, so a cut takes
a key/value head with its query heads and ``head_dim`` never changes (RoPE rotates within it).
"""
from __future__ import annotations

from math import prod
from typing import Any

import torch
from torch.fx.node import Node

from .flow import Flow, Touch, merge, normalise_dim
from .graph import flat_args, module_path
from .rules import ELEMENTWISE, PASS_MODULES, function_flow, op_name
from .split_producers import producer_of

# ops that may move or take apart a fused projection's parts dim; anything else on it is refused
_PARTS_OPS = {"permute", "transpose", "swapaxes", "swapdims", "unbind", "getitem", "select", "contiguous", "clone"}


class HeadFollowers:
    """Methods of ``walk._Walker`` (it provides ``walk``, ``first_inputs``, ``_count_attribute`` and the
    split producers' ``_listed``, ``_heads_of``, ``_set_heads``, ``_part_of_split``)."""

    def _heads_split(self, node: Node, args: Any, real_args: tuple, result: Any) -> Flow | None:
        """The Flow after a reshape that splits a projection's outputs into heads (None: not one)."""
        flow = args[0]
        if not isinstance(flow, Flow) or flow.factor != 1 or flow.composite or flow.parts_dim is not None \
                or len(flow.sources) != 1 or not isinstance(result, torch.Tensor):
            return None
        layout = _split_layout(flow.dim, tuple(real_args[0].shape), tuple(result.shape))
        source = next(iter(flow.sources))  # a listed layer, or a part of one's split output (split_producers.py)
        producer, part = producer_of(source)
        layer = self._listed(producer)
        if layout is None or layer is None or not self._straight_from(node.args[0], source):
            return None
        start, parts, heads, head_dim = layout
        if layer.kind not in ("conv", "linear") or self._heads_of(source)[0] is not None or \
                (part is not None and parts > 1):
            return None
        head_axis = start + (1 if parts > 1 else 0)
        entries = _shape_entries(node, real_args)
        entry = entries[head_axis] if head_axis < len(entries) else None
        self._set_heads(source, heads, head_dim)
        if part is not None:
            try:
                self._sliced_heads(source, heads, flow)
            except Touch:
                self._set_heads(source, None, None)
                raise
        if entry != -1:
            try:
                if not (isinstance(entry, int) and self._count_attribute(node, heads, flow)):
                    raise Touch(f"splits the outputs of {producer} into {heads} heads with a head count fixed in "
                                "the model's code; the pruned model would need it smaller")
            except Touch:
                self._set_heads(source, None, None)
                raise
        return Flow(flow.sources, head_axis, parts_dim=start if parts > 1 else None)

    def _straight_from(self, value: Any, producer: str) -> bool:
        """``value`` is the producer's output, through element-wise ops only, used by nothing else on
        the way (its shape may be read: a channel count read there is followed by the Size rules)."""
        while isinstance(value, Node) and sum(1 for user in value.users if not _reads_shape(user)) == 1:
            if value.op == "call_module" and str(value.target) == producer or \
                    self.layer_nodes.get(value.name) == producer or self._part_of_split(value, producer):
                return True
            # a layer's own reshapes around its matmul (transformers' Conv1D) are still its output
            own_view = op_name(value.target) in ("view", "reshape") and module_path(value) == producer
            elementwise = isinstance(self.submodules.get(value.target), PASS_MODULES) \
                if value.op == "call_module" else op_name(value.target) in ELEMENTWISE or own_view
            if not elementwise or not value.args:
                return False
            value = value.args[0]
        return False

    def _grouped_attention(self, name: str, real_args: tuple, real_kwargs: dict, args: tuple, kwargs: dict,
                           result: Any) -> Flow | None:
        """The Flow of a grouped-query ``scaled_dot_product_attention``, or of the ``q @ k^T`` of an
        eager one (Gemma 2's soft-capped scores) (None: heads not grouped)."""
        names = ("query", "key", "value") if name == "scaled_dot_product_attention" else ("input", "other")
        values = [real_args[i] if i < len(real_args) else real_kwargs.get(key) for i, key in enumerate(names)]
        flows = [args[i] if i < len(args) else kwargs.get(key) for i, key in enumerate(names)]
        query, key_flows = flows[0], [f for f in flows[1:] if isinstance(f, Flow)]
        if not isinstance(query, Flow) or not key_flows or query.factor != 1 or not isinstance(result, torch.Tensor) \
                or len(key_flows) != len(flows) - 1 or query.dim >= values[0].dim() - 2:
            return None
        heads = values[0].shape[query.dim]
        # key/value channels: one per KV head, spanning ``factor`` entries once repeated (repeat_kv)
        channels = {value.shape[flow.dim] // flow.factor for value, flow in zip(values[1:], flows[1:])
                    if value.shape[flow.dim] % flow.factor == 0}
        kv_heads = channels.pop() if len(channels) == 1 else 0
        if not kv_heads or heads % kv_heads:
            return None
        group = heads // kv_heads
        source = next(iter(query.sources)) if len(query.sources) == 1 else None
        if group <= 1 or source is None or self._listed(producer_of(source)[0]) is None or \
                any(f.dim != query.dim for f in key_flows) or values[0].dim() != result.dim():
            return None
        query_heads, head_dim = self._heads_of(source)
        if query_heads != heads or heads % group or not isinstance(head_dim, int):
            raise Touch(f"attends with {heads} query heads in groups of {group} that are not the outputs of "
                        "one projection split into heads")
        self._set_heads(source, heads // group, group * head_dim)
        return merge([query.at(query.dim, group)] + [flow.at(query.dim, group) for flow in key_flows], query.dim)


def _reads_shape(node: Node) -> bool:
    name = op_name(node.target)
    return (name == "getattr" and node.args[1] == "shape") or name in ("size", "dim")


def _shape_entries(node: Node, real_args: tuple) -> list[Any]:
    """A reshape's size arguments as written (ints, Nodes), or their values when the shape is one
    computed tuple (``x.size()[:-1] + (self.num_heads, -1)``: its origin is checked by re-tracing)."""
    entries = list(node.args[1:])
    if len(entries) == 1 and isinstance(entries[0], (list, tuple)):
        return list(entries[0])
    if len(entries) == 1 and isinstance(entries[0], Node) and isinstance(real_args[1], (list, tuple)):
        return list(real_args[1])
    return entries


def _split_layout(dim: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """(first output dim of the split, parts, heads, head_dim) when the channel dim, and only it,
    becomes (heads, head_dim) or (parts, heads, head_dim), dims before and after unchanged."""
    channels = in_shape[dim]
    if tuple(out_shape[:dim]) != tuple(in_shape[:dim]):
        return None
    for width in (2, 3):
        split = out_shape[dim:dim + width]
        if len(split) == width and prod(split) == channels and \
                tuple(out_shape[dim + width:]) == tuple(in_shape[dim + 1:]) and split[-1] > 1:
            parts = split[0] if width == 3 else 1
            return dim, parts, split[-2], split[-1]
    return None


def parts_flow(node: Node, real_args: tuple, real_kwargs: dict, args: tuple, kwargs: dict, result: Any) -> Any:
    """Ops on a fused projection's heads while its parts dim is still there."""
    name = op_name(node.target)
    flow = args[0] if isinstance(args[0], Flow) else None
    others = [f for f in flat_args((args[1:], tuple(kwargs.values()))) if isinstance(f, Flow)]
    if flow is None or others or name not in _PARTS_OPS:
        raise Touch("works on the q/k/v parts of a fused attention projection")
    ndim = real_args[0].dim()
    if name == "unbind":
        dim = normalise_dim(int(real_args[1] if len(real_args) > 1 else real_kwargs.get("dim", 0)), ndim)
        if dim != flow.parts_dim:
            raise Touch("unbinds a dim other than the q/k/v parts")
        return [Flow(flow.sources, flow.dim - (1 if flow.dim > dim else 0))] * len(result)
    if name in ("getitem", "select"):
        if name == "select":
            dim, index = normalise_dim(int(real_args[1]), ndim), real_args[2]
        else:
            index = real_args[1]
            dim = 0
            if isinstance(index, tuple) and index and all(i == slice(None) for i in index[:-1]):
                dim, index = len(index) - 1, index[-1]
        if dim != flow.parts_dim or not isinstance(index, int):
            raise Touch("indexes the q/k/v parts of a fused attention projection other than one at a time")
        return Flow(flow.sources, flow.dim - (1 if flow.dim > dim else 0))
    return function_flow(name, real_args, real_kwargs, args, kwargs, result)
