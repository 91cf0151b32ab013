"""Where a tensor's pruned channels live: the ``Flow`` value and the shape rules that move it.

A ``Flow`` is attached to every traced tensor that carries channels of listed layers: the
layers whose outputs were summed or multiplied into it (``sources``, a spec ``prev`` list),
the tensor dimension indexing those channels (``dim``), and how many consecutive indices of
that dimension one channel spans (``factor``, > 1 after a flatten). A tensor without a Flow
(the model input, parameters, shapes) carries no prunable channels.

The helpers below answer "where does the channel dim go" for views, permutes, reductions
and indexing; when the answer is "it is split, merged backwards or sliced", they raise
``Touch`` and the tracer treats the op as one that prunectl cannot cut through.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import Any, Sequence

import torch


class Touch(Exception):
    """The op touches the channel dimension in a way prunectl cannot follow (message: how)."""


@dataclass(frozen=True)
class Flow:
    sources: frozenset[str]
    dim: int
    factor: int = 1
    # a channel concatenation: the sources of each part, in order (a spec "cat")
    parts: tuple[frozenset[str], ...] | None = None
    # made of several channel spaces (a concatenation, or a norm over one): only element-wise
    # ops, pooling and listed layers may touch it
    composite: bool = False
    # attention heads of a fused q/k/v projection: this dim indexes the parts (q, k, v), which
    # only permutes, transposes and unbind/indexing may touch (tracing/heads.py)
    parts_dim: int | None = None

    def at(self, dim: int, factor: int | None = None) -> Flow:
        return replace(self, dim=dim, factor=self.factor if factor is None else factor)


def merge(flows: Sequence[Flow], dim: int) -> Flow:
    """Operands meeting element-wise: their channel spaces become one (like a ``prev`` sum)."""
    if any(f.composite for f in flows):
        raise Touch("adds or joins a concatenation of pruned channels to another tensor")
    factors = {f.factor for f in flows}
    if len(factors) > 1:
        raise Touch("combines tensors whose channels are laid out differently (flattened vs not)")
    return Flow(frozenset().union(*(f.sources for f in flows)), dim, flows[0].factor)


def normalise_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def concatenated(flows: Sequence[Flow], dim: int) -> Flow:
    """torch.cat along the channel dim: the parts, in order, each keeping its own channel space."""
    if any(f.factor != 1 or f.dim != dim for f in flows):
        raise Touch("concatenates tensors whose channels are laid out differently")
    parts: list[frozenset[str]] = []
    for flow in flows:
        parts += list(flow.parts) if flow.parts is not None else [flow.sources]
    return Flow(frozenset().union(*parts), dim, 1, tuple(parts), composite=True)


def reshaped(flow: Flow, in_shape: Sequence[int], out_shape: Sequence[int]) -> Flow:
    """view/reshape/flatten/unflatten/squeeze: the channel dim may keep its place or absorb the
    dims after it (channel-major, so a channel spans ``factor`` consecutive indices)."""
    d = flow.dim
    lead = prod(in_shape[:d])
    k, acc = 0, 1
    while k < len(out_shape) and acc < lead:
        acc *= out_shape[k]
        k += 1
    channels = in_shape[d]
    while k < len(out_shape) and out_shape[k] == 1 and channels != 1 and acc == lead:
        k += 1  # size-1 dims (a batch of 1, unsqueezed axes) before the channel dim
    if acc != lead or k >= len(out_shape):
        raise Touch(f"reshapes {tuple(in_shape)} -> {tuple(out_shape)} merging the channel dim with the dims before it")
    size = out_shape[k]
    if size == channels:
        return flow.at(k)
    merged, j = channels, d + 1
    while merged < size and j < len(in_shape):
        merged *= in_shape[j]
        j += 1
    if merged != size:
        raise Touch(f"reshapes {tuple(in_shape)} -> {tuple(out_shape)} splitting the channel dim")
    return flow.at(k, flow.factor * (size // channels))


def permuted(flow: Flow, order: Sequence[int]) -> Flow:
    order = [normalise_dim(int(o), len(order)) for o in order]
    parts = None if flow.parts_dim is None else order.index(flow.parts_dim)
    return replace(flow.at(order.index(flow.dim)), parts_dim=parts)


def transposed(flow: Flow, a: int, b: int, ndim: int) -> Flow:
    a, b = normalise_dim(a, ndim), normalise_dim(b, ndim)
    swap = {a: b, b: a}
    parts = None if flow.parts_dim is None else swap.get(flow.parts_dim, flow.parts_dim)
    return replace(flow.at(swap.get(flow.dim, flow.dim)), parts_dim=parts)


def reduced(flow: Flow, dims: Any, keepdim: bool, ndim: int) -> Flow:
    """mean/sum/amax over ``dims``: fine unless the channel dim is among them."""
    if dims is None:
        raise Touch("reduces over all dims, channels included")
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = [normalise_dim(int(d), ndim) for d in dims]
    if flow.dim in dims:
        raise Touch("reduces over the channel dim")
    if keepdim:
        return flow
    return flow.at(flow.dim - sum(1 for d in dims if d < flow.dim))


def indexed(flow: Flow, index: Any, in_shape: Sequence[int]) -> Flow:
    """``x[index]``: ints drop dims, None adds one, slices keep; the channel dim must stay whole."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(isinstance(i, (torch.Tensor, list)) for i in items):
        raise Touch("indexes with a tensor or list (advanced indexing)")
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
    expanded: list[Any] = []
    for item in items:
        if item is Ellipsis:
            expanded += [slice(None)] * (len(in_shape) - n_real)
        else:
            expanded.append(item)
    in_pos, out_pos = 0, 0
    for item in expanded:
        if item is None:
            out_pos += 1
            continue
        if in_pos == flow.dim:
            if not (isinstance(item, slice) and _covers(item, in_shape[in_pos])):
                raise Touch(f"indexes the channel dim with {item!r}")
            return flow.at(out_pos)
        if isinstance(item, slice):
            out_pos += 1
        in_pos += 1
    return flow.at(out_pos + (flow.dim - in_pos))


def _covers(item: slice, size: int) -> bool:
    return range(*item.indices(size)) == range(size)


def broadcast_dim(flow: Flow, operand_ndim: int, out_ndim: int) -> int:
    return flow.dim + (out_ndim - operand_ndim)
