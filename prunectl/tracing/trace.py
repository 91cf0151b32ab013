"""Automatic specs: trace a model and derive the spec a user would otherwise write by hand.

    spec = prunectl.derive_spec("torchvision:resnet50", (1, 3, 224, 224))

The model is traced with ``torch.fx`` (``torch.export`` for transformers models and where fx
cannot; capture.py) and run once on a random input of the given shape
(``walk``); every Conv/Linear/BatchNorm it meets becomes a spec layer in execution order,
with ``prev`` naming the layers whose outputs were added or multiplied into its input.
Layers whose channels reach the model output get ``prune: false``. An op that touches
pruned channels in a way prunectl cannot cut (a LayerNorm over them, a concat along them,
attention) is an ``UnsupportedError`` naming it, or, with ``skip_unsupported``, pins those
channels (``prune: false`` on the layers producing them) and is listed in ``pinned``.

The spec is checked against the model with ``build_groups`` before it is returned, so a
spec that the tracer writes is one the pipeline accepts.

A traced spec sets ``round_to: 8`` when most prunable layers of the model are multiples of 8
wide: the designer chose hardware-friendly widths, and odd widths throw convolutions off
ONNX Runtime's blocked (NCHWc) kernels, so a model pruned 30% by MACs could run slower than
the original (docs/results/bench/latency.json, docs/decisions.md). ``--round-to 1`` restores exact rates.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn as nn

from ..coupling.groups import build_groups
from ..errors import SpecError, UnsupportedError, first_line
from ..formats.spec import InputSpec, LayerSpec, ModelRef, Spec
from ..layers import kinds as L
from ..models import factory
from ..models.inputs import make_inputs
from .capture import capture, export_capture
from .graph import Incident, TracedLayer, Walk
from .walk import walk_graph

OUTPUT_REASON = "its channels reach the model output"
HARDWARE_ROUND_TO = 8


@dataclass(frozen=True)
class TraceResult:
    spec: Spec
    pinned: dict[str, str] = field(default_factory=dict)  # layer -> why it keeps every channel
    incidents: tuple[Incident, ...] = ()  # every op that touched pruned channels unfollowably
    tracer: str = "torch.fx"  # what captured the graph: torch.fx or torch.export

    def under(self, module: str | None) -> TraceResult:
        """The trace of submodule ``module`` with every name a path in the whole model (spec "module")."""
        if module is None:
            return self
        return replace(self, spec=self.spec.under(module),
                       pinned={f"{module}.{name}": why for name, why in self.pinned.items()})


def trace_model(model: nn.Module, input_shape: tuple[int, ...], *, dtype: str = "float32",
                model_ref: ModelRef | None = None, skip_unsupported: bool = False,
                source: str = "<traced>") -> TraceResult:
    """Trace ``model`` on a random input of ``input_shape`` and derive its spec."""
    input_spec = InputSpec(tuple(int(d) for d in input_shape), dtype)
    example = make_inputs(input_spec, seed=0, count=1, model=model)[0]
    was_training = model.training
    model.eval()
    try:
        walk, tracer = _walk(model, example, input_shape)
    finally:
        model.train(was_training)
    if not walk.layers:
        raise UnsupportedError(f"{type(model).__name__}: the trace found no Conv/Linear layer to prune")

    pinned = {name: OUTPUT_REASON for name in sorted(walk.output_sources)}
    spec = _spec(walk, pinned, model_ref, input_spec, source)
    live = _live_incidents(walk.incidents, spec, model)
    if live and not skip_unsupported:
        raise UnsupportedError(_unsupported_message(live, spec))
    for incident in live:
        for name in sorted(incident.sources):
            pinned.setdefault(name, incident.describe())
    if live:
        spec = _spec(walk, pinned, model_ref, input_spec, source)
        build_groups(spec, model)
    spec = replace(spec, round_to=_deploy_round_to(spec, model))
    return TraceResult(spec, pinned, tuple(walk.incidents), tracer)


def derive_spec(model_or_factory: nn.Module | str | Callable[[], nn.Module], input_shape: tuple[int, ...], *,
                skip_unsupported: bool = False, dtype: str = "float32") -> Spec:
    """The spec of a model, a factory string ("torchvision:resnet50") or a zero-argument factory."""
    model_ref = None
    if isinstance(model_or_factory, str):
        model_ref = ModelRef(model_or_factory, {})
        model = factory.build(model_or_factory, {})
    elif isinstance(model_or_factory, nn.Module):
        model = model_or_factory
    elif callable(model_or_factory):
        model = model_or_factory()
        if not isinstance(model, nn.Module):
            raise SpecError(f"derive_spec: the factory returned {type(model).__name__}, not an nn.Module")
    else:
        raise SpecError(f"derive_spec: expected an nn.Module, a factory string or a callable, "
                        f"got {type(model_or_factory).__name__}")
    return trace_model(model, input_shape, dtype=dtype, model_ref=model_ref,
                       skip_unsupported=skip_unsupported).spec


def _walk(model: nn.Module, example: torch.Tensor, input_shape: tuple[int, ...]) -> tuple[Walk, str]:
    """The walk of torch.fx's graph, or of torch.export's (transformers models, and where fx cannot)."""
    captured = capture(model, example)
    try:
        walk = walk_graph(captured.graph_module, example, model, args=captured.args,
                          layer_nodes=captured.layer_nodes, modules=captured.modules)
    except UnsupportedError:
        raise
    except Exception as exc:
        failure = UnsupportedError(f"{type(model).__name__}: running the traced graph ({captured.tracer}) on input "
                                   f"{list(input_shape)} failed ({first_line(exc)}); check --input-shape, "
                                   f"or write a spec by hand")
        if captured.tracer == "torch.export" or not _runs(model, example):
            raise failure from None
        # the model runs but fx's graph of it does not (fx froze a list the code mutates, as in
        # torchvision's Swin3D): torch.export records what actually ran
        try:
            captured = export_capture(model, example)
            walk = walk_graph(captured.graph_module, example, model, args=captured.args,
                              layer_nodes=captured.layer_nodes, modules=captured.modules)
        except UnsupportedError as export_error:
            raise UnsupportedError(f"{failure}; {export_error}") from None
        except Exception:
            raise failure from None
    return walk, captured.tracer


def _runs(model: nn.Module, example: torch.Tensor) -> bool:
    try:
        with torch.no_grad():
            model(example)
    except Exception:
        return False
    return True


def _spec(walk: Walk, pinned: dict[str, str], model_ref: ModelRef | None, input_spec: InputSpec,
          source: str) -> Spec:
    position = {layer.name: i for i, layer in enumerate(walk.layers)}
    layers = []
    previous: str | None = None
    for layer in walk.layers:
        cat = None if layer.cat is None else tuple(
            tuple(sorted(part, key=position.__getitem__)) for part in layer.cat)
        layers.append(LayerSpec(name=layer.name, prev=None if cat else _prev(layer, previous, position),
                                prune=layer.name not in pinned, cat=cat, dim=layer.dim,
                                count=layer.kind == "count", heads=layer.heads, head_dim=layer.head_dim,
                                parts=layer.parts))
        previous = layer.name
    return Spec(layers=tuple(layers), model=model_ref, input=input_spec, source=source)


def _deploy_round_to(spec: Spec, model: nn.Module) -> int | None:
    """8 when more than half the prunable layers are multiples of 8 wide, else unset.

    Half, not all: squeeze-excitation bottlenecks (efficientnet's 4, 6, 10) are odd by
    construction and tiny; rounding them up costs nothing. Shufflenet (58, 116, 232) was not
    designed around 8 and keeps exact rates."""
    modules = dict(model.named_modules())
    widths = [L.out_width(modules[layer.name]) for layer in spec.layers  # parameter/count entries follow these
              if layer.prune and layer.name in modules and L.kind_of(modules[layer.name]) != "other"]
    aligned = sum(width % HARDWARE_ROUND_TO == 0 for width in widths)
    return HARDWARE_ROUND_TO if widths and 2 * aligned > len(widths) else None


def _prev(layer: TracedLayer, previous: str | None, position: dict[str, int]) -> tuple[str, ...] | None:
    """None when the previous listed layer feeds it (the spec's default); () for a fixed input."""
    if layer.inputs is None:
        return None if previous is None else ()
    ordered = tuple(sorted(layer.inputs, key=position.__getitem__))
    return None if ordered == (previous,) else ordered


def _live_incidents(incidents: list[Incident], spec: Spec, model: nn.Module) -> list[Incident]:
    """Incidents touching channels that would otherwise be pruned (others are harmless)."""
    prunable = {}
    for group in build_groups(spec, model):
        for name in group.layers:
            prunable[name] = prunable.get(name, False) or group.prunable
    return [incident for incident in incidents if any(prunable.get(name, False) for name in incident.sources)]


def _unsupported_message(live: list[Incident], spec: Spec) -> str:
    first = live[0]
    layers = ", ".join(repr(name) for name in sorted(first.sources)[:3])
    more = f" ({len(live) - 1} more such ops)" if len(live) > 1 else ""
    return (f"{first.describe()}, so the channels of {layers} cannot be pruned "
            f"through it{more}. Pass --skip-unsupported to leave them unpruned, or write the spec with "
            "`prunectl spec --skip-unsupported -o spec.json` and edit its \"prune\": false marks")


__all__ = ["TraceResult", "trace_model", "derive_spec"]
