"""A producer whose output channels are split into consecutive parts that meet again.

GPT-2's ``c_attn`` gives q, k and v in one tensor, ``.split(split_size, dim=2)`` takes them apart
and each part is viewed into heads; Phi-3's ``gate_up_proj`` is ``.chunk(2, dim=-1)`` into gate and
up, multiplied together. The shape rules refuse a split of the channel dim (flow.py); here each
part gets a Flow of its own, with its own source name ``producer#i``, and is followed like any
channel space: a part may be viewed into heads (tracing/heads.py registers them per part), and
the parts meet again in the attention (q @ k^T, weights @ v) or in gate * up, so a listed layer
reads them together.

After the walk (``settle_parts``) the parts of a producer are one channel space when its readers
joined them all: the same kept channels at every part's offset (the spec's ``heads`` with one
``head_dim`` per part, or ``parts`` for plain channels; coupling/attention_groups.py), and every
``producer#i`` is the producer again. Parts read apart (a GhostNet-style split), or only some
of them split into heads, are an incident: the producer keeps its outputs.

Phi-3 slices its fused ``qkv_proj`` instead (``qkv[..., :query_pos]``, then k, then v): consecutive
slices of a layer's output that only slices read, tiling it in order, are its parts the same way.

The pruned model must split its smaller output the same way: ``chunk(n)`` and ``tensor_split(x,
n)`` size the parts from the tensor; ``split(size)`` reads a size, which must be an int
attribute of the module (GPT-2's ``split_size``), listed as an attribute entry so that the cut
sets it to the kept width. A slice's bounds are literals of the graph: every part but the last
must be heads whose count is an int attribute the module reads (Phi-3's ``num_key_value_heads``
and ``config.num_attention_heads``), listed the same way; the bounds computed from them shrink.
A re-trace with that attribute changed cannot run (the split would
no longer give three parts), so the attribute is the one of that value which the module's own
``forward`` reads by name; a wrong one would make the hard model differ, which the proof reports.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.fx.node import Node

from .flow import Flow, Touch, normalise_dim
from .graph import Incident, TracedLayer, Walk
from .rules import op_name

PART_MARK = "#"
_SPLITS = {"split", "chunk", "tensor_split"}


def part_source(producer: str, index: int) -> str:
    return f"{producer}{PART_MARK}{index}"


def producer_of(source: str) -> tuple[str, int | None]:
    """(the listed layer, the part index) of a Flow source; index None: the layer's whole output."""
    name, mark, index = source.rpartition(PART_MARK)
    return (name, int(index)) if mark and index.isdigit() else (source, None)


class SplitFollowers:
    """Methods of ``walk._Walker`` (it provides ``walk``, ``_straight_from`` and ``_count_attribute``)."""

    splits: dict[str, int]  # producer -> how many parts its output was split into
    slices: dict[str, list[tuple[int, int, int]]]  # producer -> (start, stop, width) of each sliced part
    slice_nodes: dict[str, str]  # slice node name -> its part source
    counted_slices: set[str]  # sliced parts whose bound an attribute entry follows
    part_heads: dict[str, dict[int, tuple[int, Any]]]  # producer -> part -> (heads, head_dim)
    split_nodes: dict[str, str]  # split node name -> producer

    def _split_parts(self, node: Node, real_args: tuple, real_kwargs: dict, args: tuple,
                     result: Any) -> list[Flow] | None:
        """The part Flows of a split of a listed layer's own outputs along their channels (None: not one)."""
        name = op_name(node.target)
        flow = args[0] if args else None
        if name not in _SPLITS or not isinstance(flow, Flow) or flow.factor != 1 or flow.composite \
                or flow.parts_dim is not None or len(flow.sources) != 1 or not isinstance(result, (list, tuple)):
            return None
        producer = next(iter(flow.sources))
        value = real_args[0]
        given = real_args[2] if len(real_args) > 2 else real_kwargs.get("dim", 0)
        if producer_of(producer)[1] is not None or normalise_dim(int(given), value.dim()) != flow.dim \
                or len(result) < 2:
            return None
        layer = self._listed(producer)
        if layer is None or layer.kind not in ("conv", "linear") or layer.heads is not None or producer in self.splits \
                or not self._straight_from(node.args[0], producer):
            return None
        widths = [part.shape[flow.dim] for part in result]
        if len(set(widths)) != 1:
            raise Touch(f"splits the outputs of {producer} into parts of different widths {widths}")
        size = real_args[1] if len(real_args) > 1 else None
        parts = [Flow(frozenset({part_source(producer, i)}), flow.dim) for i in range(len(widths))]
        if name == "split" and not self._count_attribute(node, size, parts[0], by_name=True):
            raise Touch(f"splits the outputs of {producer} at a size fixed in the model's code ({size}); "
                        "the pruned model would need it smaller")
        if name == "tensor_split" and not isinstance(size, int):
            raise Touch(f"splits the outputs of {producer} at indices fixed in the model's code")
        self.splits[producer] = len(widths)
        self.split_nodes[node.name] = producer
        return parts

    def _slice_part(self, node: Node, real_args: tuple, real_kwargs: dict, args: tuple, result: Any) -> Flow | None:
        """The part Flow of one of the consecutive slices of a listed layer's outputs (None: not one)."""
        flow = args[0] if args else None
        if op_name(node.target) != "slice" or not isinstance(flow, Flow) or flow.factor != 1 or flow.composite \
                or flow.parts_dim is not None or len(flow.sources) != 1 or not isinstance(result, torch.Tensor):
            return None
        producer, value = next(iter(flow.sources)), real_args[0]
        dim = normalise_dim(int(real_args[1] if len(real_args) > 1 else real_kwargs.get("dim", 0)), value.dim())
        bounds = [real_args[i] if len(real_args) > i else real_kwargs.get(key, default)
                  for i, key, default in ((2, "start", None), (3, "end", None), (4, "step", 1))]
        width = value.shape[dim]
        start, stop, step = slice(*bounds).indices(width)
        layer = self._listed(producer)
        if dim != flow.dim or step != 1 or (start, stop) == (0, width) or producer_of(producer)[1] is not None \
                or layer is None or layer.kind not in ("conv", "linear") or layer.heads is not None \
                or producer in self.splits or not self._only_sliced(node.args[0], producer):
            return None
        cuts = self.slices.setdefault(producer, [])
        if start != (cuts[-1][1] if cuts else 0):
            raise Touch(f"slices the outputs of {producer} out of order or leaving a gap ({start}:{stop})")
        cuts.append((start, stop, width))
        source = part_source(producer, len(cuts) - 1)
        self.slice_nodes[node.name] = source
        return Flow(frozenset({source}), dim)

    def _only_sliced(self, value: Any, producer: str) -> bool:
        """``value`` is the producer's own output and everything but shape reads slices it."""
        if not isinstance(value, Node) or not (value.op == "call_module" and str(value.target) == producer
                                               or self.layer_nodes.get(value.name) == producer):
            return False
        return all(op_name(user.target) in ("slice", "size") or op_name(user.target) == "getattr"
                   for user in value.users)

    def _sliced_heads(self, source: str, heads: int, flow: Flow) -> None:
        """A sliced part split into heads: its bound must follow the kept heads (``_slice_part``)."""
        node_name = next((name for name, part in self.slice_nodes.items() if part == source), None)
        producer, index = producer_of(source)
        if node_name is None:
            return
        start, stop, width = self.slices[producer][index]
        if stop == width:
            return  # the last part runs to the end: its bound is the tensor's own
        node = next(n for n in self.module.graph.nodes if n.name == node_name)
        if not self._count_attribute(node, heads, flow, by_name=True):
            raise Touch(f"slices the outputs of {producer} at {stop}, a bound fixed in the model's code that no "
                        "int attribute holding the head count gives; the pruned model would need it smaller")
        self.counted_slices.add(source)

    def _part_of_split(self, value: Node, producer: str) -> bool:
        """``value`` is part ``producer`` (``name#i``) taken out of its split (``split[i]``)."""
        if self.slice_nodes.get(value.name) == producer:
            return True
        if op_name(value.target) != "getitem" or len(value.args) != 2 or not isinstance(value.args[0], Node):
            return False
        owner = self.split_nodes.get(value.args[0].name)
        return owner is not None and isinstance(value.args[1], int) and part_source(owner, value.args[1]) == producer

    def _listed(self, name: str) -> TracedLayer | None:
        return next((layer for layer in self.walk.layers if layer.name == name), None)

    def _heads_of(self, source: str) -> tuple[int | None, Any]:
        """(heads, head_dim) of a Flow source: a listed layer's, or a part's."""
        name, index = producer_of(source)
        if index is not None:
            return self.part_heads.get(name, {}).get(index, (None, None))
        layer = self._listed(name)
        return (layer.heads, layer.head_dim) if layer is not None else (None, None)

    def _set_heads(self, source: str, heads: int | None, head_dim: int | None) -> None:
        name, index = producer_of(source)
        if index is not None:
            if heads is None:
                self.part_heads.get(name, {}).pop(index, None)
            else:
                self.part_heads.setdefault(name, {})[index] = (heads, head_dim)
            return
        position = next(i for i, layer in enumerate(self.walk.layers) if layer.name == name)
        layer = self.walk.layers[position]
        self.walk.layers[position] = TracedLayer(layer.name, layer.kind, layer.inputs, layer.cat, layer.dim,
                                                 heads, head_dim, layer.parts)


def _parts_problem(joined: bool, heads: list[tuple[int, Any] | None]) -> str | None:
    """Why a producer's parts are not one channel space (None: they are)."""
    if not joined:
        return "splits its outputs into parts that no listed layer reads together"
    if any(h is None for h in heads) and any(h is not None for h in heads):
        return "splits its outputs into parts of which only some are attention heads"
    if all(h is not None for h in heads) and len({h[0] for h in heads}) > 1:
        return "splits its outputs into parts with different head counts"
    return None


def settle_parts(walk: Walk, splits: dict[str, int], part_heads: dict[str, dict[int, tuple[int, Any]]],
                 slices: dict[str, list[tuple[int, int, int]]] | None = None, counted: set[str] | None = None) -> None:
    """Every part source becomes its producer again: one channel space with heads or parts where the
    readers joined all its parts, else an incident (the producer keeps its outputs)."""
    splits = dict(splits)
    unfollowed: dict[str, str] = {}
    for producer, cuts in (slices or {}).items():
        splits[producer] = len(cuts)
        if cuts[-1][1] != cuts[-1][2] or len(cuts) < 2:
            unfollowed[producer] = "slices its outputs into parts that leave some outputs unread"
        elif any(part_source(producer, i) not in (counted or set()) for i in range(len(cuts) - 1)):
            unfollowed[producer] = "slices its outputs at bounds fixed in the model's code that no head count gives"
    if not splits:
        return
    find = walk.summed_together()
    failed: set[str] = set()
    position = {layer.name: i for i, layer in enumerate(walk.layers)}
    for producer, count in splits.items():
        names = [part_source(producer, i) for i in range(count)]
        heads = [part_heads.get(producer, {}).get(i) for i in range(count)]
        problem = unfollowed.get(producer) or _parts_problem(len({find(name) for name in names}) == 1, heads)
        layer = walk.layers[position[producer]]
        if problem is not None:
            failed.add(producer)
            # what its parts were summed with keeps its channels too (before split producers, the
            # split itself pinned the producer, and an add of its untracked part pinned the rest)
            together = {producer_of(source)[0] for other in walk.layers for source in other.inputs or ()
                        if any(producer_of(s)[0] == producer and producer_of(s)[1] is not None
                               for s in other.inputs or ())}
            walk.incidents.append(Incident(producer, "split", problem, frozenset({producer} | together)))
            continue
        if all(h is not None for h in heads):
            dims = tuple(h[1] for h in heads)
            fields = {"heads": heads[0][0], "head_dim": dims[0] if len(set(dims)) == 1 else dims, "parts": None}
        else:
            fields = {"heads": None, "head_dim": None, "parts": count}
        walk.layers[position[producer]] = TracedLayer(layer.name, layer.kind, layer.inputs, layer.cat, layer.dim,
                                                      **fields)

    def renamed(sources: frozenset[str] | None, reader: bool = False) -> frozenset[str] | None:
        if sources is None:
            return None
        out = set()
        for source in sources:
            name, index = producer_of(source)
            if index is None or name not in failed or not reader:
                out.add(name if index is not None else source)
        # a reader of a failed producer's parts reads a fixed input: the producer keeps its outputs
        return frozenset(out) if out or not reader else None

    walk.layers[:] = [TracedLayer(layer.name, layer.kind, renamed(layer.inputs, layer.kind != "count"),
                                  None if layer.cat is None else tuple(renamed(part) for part in layer.cat),
                                  layer.dim, layer.heads, layer.head_dim, layer.parts) for layer in walk.layers]
    walk.output_sources = set(renamed(frozenset(walk.output_sources)) or ())
    walk.incidents[:] = [Incident(i.where, i.op, i.reason, renamed(i.sources)) for i in walk.incidents]
    walk.ties[:] = [Incident(i.where, i.op, i.reason, renamed(i.sources)) for i in walk.ties]


__all__ = ["PART_MARK", "SplitFollowers", "part_source", "producer_of", "settle_parts"]
