"""Capture a model's graph for the walk: torch.fx first, torch.export where fx cannot.

Three capturers, tried in this order, each returning a ``Captured`` graph that ``walk_graph``
runs on the example input:

- transformers models: ``transformers.utils.fx.symbolic_trace`` (plain torch.fx fails on them:
  their forward branches on ``None`` inputs and on shapes), with the same leaf rule as ours;
- everything else: torch.fx symbolic tracing (``graph.symbolic_graph``);
- when that fails (shape-dependent Python control flow, ``math`` on sizes, ...): ``torch.export``.
  Its graph is flat aten ops with parameters lifted to placeholders, so there are no module
  calls: a conv/linear/batch-norm op whose weight is the ``weight`` parameter of a module of
  that kind is walked as that module (the parameter's name, from the graph signature, says
  which; ``nn_module_stack`` names the module of every other op in messages). An op with a
  weight that is not a module's own (weight standardisation, tied weights) is an op the rules
  do not know, so its channels are pinned or reported: never guessed.
"""
from __future__ import annotations

import io
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import UnsupportedError, first_line
from ..layers import kinds as L
from ..models.hf_provider import is_hf_model
from .graph import quiet_logs, symbolic_graph
from .hf_fx import hf_graph

# aten ops that compute one listed module's output from its input (argument 1 is the weight)
_LAYER_OPS = {
    "conv": {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
             "convolution"},
    "linear": {"linear"},
    "norm": {"batch_norm"},
}


@dataclass
class Captured:
    graph_module: fx.GraphModule
    args: tuple[Any, ...]  # the values of the graph's placeholders, the example input among them
    tracer: str  # "torch.fx", "transformers.fx" or "torch.export"
    layer_nodes: dict[str, str] = field(default_factory=dict)  # node name -> module it computes
    modules: dict[str, nn.Module] = field(default_factory=dict)


def fx_capture(model: nn.Module, example: torch.Tensor) -> Captured:
    """torch.fx (transformers' tracer for transformers models); UnsupportedError when it cannot."""
    if is_hf_model(model):
        return Captured(hf_graph(model), (example,), "transformers.fx")
    return Captured(symbolic_graph(model), (example,), "torch.fx")


def export_capture(model: nn.Module, example: torch.Tensor) -> Captured:
    """torch.export's graph, with conv/linear/batch-norm ops mapped back to their modules."""
    from torch.export.graph_signature import InputKind

    try:
        # torch.export prints the partial graph of a failed capture to stderr itself (torch/export/_trace.py)
        with quiet_logs(), redirect_stderr(io.StringIO()):
            program = torch.export.export(model, (example,), strict=False)
    except Exception as exc:
        raise UnsupportedError(f"{type(model).__name__}: torch.export cannot capture it either ({first_line(exc)})") \
            from None
    values: list[Any] = []
    parameter_of: dict[str, str] = {}  # placeholder name -> parameter FQN
    for spec in program.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            values.append(example)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            store = program.state_dict if spec.target in program.state_dict else program.constants
            values.append(store[spec.target])
            if spec.kind == InputKind.PARAMETER:
                parameter_of[spec.arg.name] = spec.target
        else:
            raise UnsupportedError(f"{type(model).__name__}: torch.export captured an input of kind "
                                   f"{spec.kind.name} ({spec.target}), which prunectl's tracer cannot feed")
    modules = dict(model.named_modules())
    layer_nodes = {}
    for node in program.graph_module.graph.nodes:
        module_name = _layer_of(node, parameter_of, modules)
        if module_name is not None:
            layer_nodes[node.name] = module_name
    return Captured(program.graph_module, tuple(values), "torch.export", layer_nodes, modules)


def _layer_of(node: fx.Node, parameter_of: dict[str, str], modules: dict[str, nn.Module]) -> str | None:
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None or len(node.args) < 2:
        return None
    weight = node.args[1]
    fqn = parameter_of.get(weight.name) if isinstance(weight, fx.Node) else None
    if fqn is None or "." not in fqn:
        return None
    module_name, attribute = fqn.rsplit(".", 1)
    module = modules.get(module_name)
    op = schema.name.split("::", 1)[-1]
    if attribute != "weight" or module is None or op not in _LAYER_OPS.get(L.kind_of(module), ()):
        return None
    return module_name


__all__ = ["Captured", "fx_capture", "export_capture"]
