"""Parameters that reach an op through gathers and views: a per-head table of a window attention.

timm's Swin adds ``table[index].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)`` to the attention
scores: a relative position bias with one column of the table per head. The walk lists such a
table as a parameter entry following the heads (cut along the axis that becomes them) once two
things hold: the chain from the table to the op is ops that only move and copy entries, each used
once, their other inputs constants (the index buffer); and running the chain again on a table
whose entries are their own index along one axis gives, along the op's heads dim, every entry its
own index. Then slicing the table along that axis commutes with the chain, so the hard model's
bias is the soft model's with the cut heads left out. A chain with a literal size where the heads
go would fail in the hard model, which the proof reports.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.fx.node import Node

from .graph import flat_args
from .rules import op_name

# ops that move and copy a table's entries without mixing them
_GATHERS = {"getitem", "view", "reshape", "permute", "contiguous", "unsqueeze", "transpose", "flatten", "index_select"}


def chain_to_parameter(operand: Any, parameters: set[str]) -> tuple[Node, list[Node]] | None:
    """(the parameter's get_attr node, the ops from it to ``operand`` in order), when ``operand`` is
    the end of a single-user chain of gathers/views of one parameter (other inputs constants)."""
    steps: list[Node] = []
    current = operand
    while isinstance(current, Node) and current.op in ("call_method", "call_function") and \
            op_name(current.target) in _GATHERS and len(current.users) == 1 and current.args:
        steps.append(current)
        others = [a for a in flat_args((current.args[1:], tuple(current.kwargs.values()))) if isinstance(a, Node)]
        if not all(_is_constant(a, parameters) for a in others):
            return None  # an index computed from the input, or a second parameter
        if op_name(current.target) in ("view", "reshape") and view_sizes(current).count(-1) != 1:
            return None  # a literal size would not shrink with the cut: only -1 follows the kept count
        current = current.args[0]
    if not (steps and isinstance(current, Node) and current.op == "get_attr" and str(current.target) in parameters
            and len(current.users) == 1):
        return None
    return current, steps[::-1]


def view_sizes(node: Node) -> list[Any]:
    """A view/reshape node's size arguments as written (``x.view(1, -1)`` or ``x.view((1, -1))``)."""
    sizes = list(node.args[1:])
    return list(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)) else sizes


def _is_constant(node: Node, parameters: set[str], depth: int = 8) -> bool:
    """A buffer or constant, or ops on them only (``index.view(-1)``): the same in the hard model."""
    if node.op == "get_attr":
        return str(node.target) not in parameters
    if node.op not in ("call_method", "call_function") or depth == 0:
        return False
    inputs = [a for a in flat_args((node.args, tuple(node.kwargs.values()))) if isinstance(a, Node)]
    return bool(inputs) and all(_is_constant(a, parameters, depth - 1) for a in inputs)


def _evaluate(node: Node, values: dict[Node, Any], constant: Callable[[str], Any]) -> Any:
    """A node's value from ``values``, a get_attr's from the module, or an op on those, computed."""
    if node in values:
        return values[node]
    if node.op == "get_attr":
        return constant(str(node.target))

    def fetch(a: Any) -> Any:
        return _evaluate(a, values, constant) if isinstance(a, Node) else a
    call_args = [fetch(a) for a in node.args]
    call_kwargs = {k: fetch(v) for k, v in node.kwargs.items()}
    if node.op == "call_method":
        return getattr(call_args[0], str(node.target))(*call_args[1:], **call_kwargs)
    return node.target(*call_args, **call_kwargs)


def carries_index(steps: list[Node], source: Node, table: torch.Tensor, axis: int,
                  constant: Callable[[str], Any], ndim: int, axis_out: int) -> bool:
    """Whether the chain maps entry i of ``table``'s ``axis`` to entry i of its output's ``axis_out``
    (``constant``: the value of a get_attr target, the index buffers)."""
    shape = [1] * table.dim()
    shape[axis] = -1
    values: dict[Node, Any] = {source: torch.arange(table.shape[axis], dtype=torch.float64).view(shape)
                               .expand(table.shape).contiguous()}
    for step in steps:
        try:
            values[step] = _evaluate(step, values, constant)
        except Exception:  # the chain cannot run on an index table: not such a chain
            return False
    out = values[steps[-1]]
    if not isinstance(out, torch.Tensor) or out.dim() != ndim:
        return False
    expected = [1] * ndim
    expected[axis_out] = -1
    own_index = torch.arange(out.shape[axis_out], dtype=torch.float64).view(expected).expand(out.shape)
    return bool(torch.equal(out, own_index))



__all__ = ["carries_index", "chain_to_parameter", "view_sizes"]
