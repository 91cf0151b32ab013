"""Capture a model's graph for the walk: torch.fx first, torch.export where fx cannot.

Two capturers, each returning a ``Captured`` graph that ``walk_graph`` runs on the example input:

- torch.fx symbolic tracing (``graph.symbolic_graph``), for plain torch models;
- ``torch.export``: for transformers models always (``hf_export.py``: transformers 5 has no fx
  tracer), for the others when fx fails (shape-dependent Python control flow, ``math`` on sizes).
  Its graph is flat aten ops with parameters lifted to placeholders, so there are no module
  calls: a conv/linear/norm/embedding op whose weight is the ``weight`` parameter of a module of
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
from ..layers.ties import tied_groups
from ..models.hf_provider import is_hf_model
from .graph import quiet_logs, symbolic_graph
from .hf_export import hf_export, hf_kwargs

# aten ops that compute one listed module's output from its input, and which argument is the weight
_LAYER_OPS = {
    "conv": {"conv1d": 1, "conv2d": 1, "conv3d": 1, "conv_transpose1d": 1, "conv_transpose2d": 1,
             "conv_transpose3d": 1, "convolution": 1},
    "linear": {"linear": 1, "addmm": 2},  # addmm(bias, x, weight): transformers' Conv1D (GPT-2)
    "norm": {"batch_norm": 1, "layer_norm": 2, "group_norm": 2, "rms_norm": 2},
    "embedding": {"embedding": 0},
}


@dataclass
class Captured:
    graph_module: fx.GraphModule
    args: tuple[Any, ...]  # the values of the graph's placeholders, the example input among them
    tracer: str  # "torch.fx" or "torch.export"
    layer_nodes: dict[str, str] = field(default_factory=dict)  # node name -> module it computes
    modules: dict[str, nn.Module] = field(default_factory=dict)


def fx_capture(model: nn.Module, example: torch.Tensor) -> Captured:
    """torch.fx's graph; UnsupportedError when it cannot trace the model (never tried on a
    transformers model: ``capture`` sends those to torch.export)."""
    return Captured(symbolic_graph(model), (example,), "torch.fx")


def capture(model: nn.Module, example: torch.Tensor) -> Captured:
    """torch.export for transformers models, torch.fx for the rest (torch.export where fx fails).

    No fx attempt precedes a transformers model's export: transformers' fx tracer (4.x) patched
    torch functions and config state that a failed attempt could leave behind for the export."""
    if is_hf_model(model):
        return export_capture(model, example)
    try:
        return fx_capture(model, example)
    except UnsupportedError as fx_error:
        try:
            return export_capture(model, example)
        except UnsupportedError as export_error:
            raise UnsupportedError(f"{fx_error}; {export_error}") from None


def export_capture(model: nn.Module, example: torch.Tensor) -> Captured:
    """torch.export's graph, with conv/linear/batch-norm ops mapped back to their modules."""
    from torch.export.graph_signature import InputKind

    if is_hf_model(model):
        program = hf_export(model, example)
        user_inputs = hf_kwargs(model, example)
    else:
        try:
            # torch.export prints the partial graph of a failed capture to stderr itself (torch/export/_trace.py)
            with quiet_logs(), redirect_stderr(io.StringIO()):
                program = torch.export.export(model, (example,), strict=False)
        except Exception as exc:
            raise UnsupportedError(f"{type(model).__name__}: torch.export cannot capture it either "
                                   f"({first_line(exc)})") from None
        user_inputs = {}
    values: list[Any] = []
    parameter_of: dict[str, str] = {}  # placeholder name -> parameter FQN
    for spec in program.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            # the example, or a keyword the capture passed by name (use_cache=False)
            values.append(user_inputs.get(spec.arg.name, example))
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
    owners = _owners(model)
    for node in program.graph_module.graph.nodes:
        module_name = _layer_of(node, parameter_of, modules, owners)
        if module_name is not None:
            layer_nodes[node.name] = module_name
    return Captured(program.graph_module, tuple(values), "torch.export", layer_nodes, modules)


def _owners(model: nn.Module) -> dict[str, list[str]]:
    """Tied parameter name -> every module holding that tensor as its ``weight``: torch.export lifts
    a tied parameter (an LLM's embedding and lm_head) once, under one of its names."""
    owners: dict[str, list[str]] = {}
    for group in tied_groups(model):
        holders = [name.rpartition(".")[0] for name in group if name.rpartition(".")[2] == "weight"]
        owners.update({name: holders for name in group})
    return owners


def _layer_of(node: fx.Node, parameter_of: dict[str, str], modules: dict[str, nn.Module],
              owners: dict[str, list[str]]) -> str | None:
    schema = getattr(node.target, "_schema", None)
    if node.op != "call_function" or schema is None:
        return None
    op = schema.name.split("::", 1)[-1]
    position = max((ops.get(op, -1) for ops in _LAYER_OPS.values()), default=-1)
    if position < 0 or len(node.args) <= position:
        return None
    weight = node.args[position]
    fqn = parameter_of.get(weight.name) if isinstance(weight, fx.Node) else None
    if fqn is None or "." not in fqn:
        return None
    # the holder of that weight whose kind computes this op (a tied weight has several holders)
    own, _, attribute = fqn.rpartition(".")
    for module_name in owners.get(fqn, [own] if attribute == "weight" else []):
        module = modules.get(module_name)
        if module is not None and op in _LAYER_OPS.get(L.kind_of(module), ()):
            return module_name
    return None


__all__ = ["Captured", "capture", "fx_capture", "export_capture"]
