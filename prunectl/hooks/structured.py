"""Structured (channel) pruning inside training: each event is one run of the pipeline.

At an event the in-process pipeline (``prunectl.prune``) runs on a copy of the masked model at
the schedule's cumulative rate and returns a plan (kept channels per layer); the plan becomes
channel masks on the live model (channel_masks.py), which keeps its shapes and trains on. A
channel an earlier event cut scores 0 through ``KeepCut``, below every live channel, so a
higher rate cuts a superset, and the new plan is checked to be one. ``finish`` runs the
pipeline once more with the survivors as the scores (1 alive, 0 cut) at the last rate: the
same plan, now hard-pruned, verified soft == hard, and a bundle away (``result.save``).

Layer by layer (MaskImpt's ``pre_layer``), each event adds its layers to the ones cut so far and
runs the pipeline with ``only`` those (``--only``): the groups holding them are cut at the one
rate, an earlier group is cut again at that rate (its cut channels score 0: the same ones go),
every other group is pinned. A group is cut as a whole, so a layer brings in the layers its
channels are coupled with (a residual stream's convolutions go with the first of them named).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..api import PruneResult, prune
from ..criteria.base import Criterion, LayerView, get_criterion
from ..cut.plan import kept_by_layer
from ..errors import SpecError, VerificationError
from ..in_process import Plan
from ..layers import kinds as L
from ..loading.data import CalibrationData
from ..loading.in_memory import calibration_batches, example_input
from ..models.device import CPU, device_name, device_of, resolve_device
from .channel_masks import apply_channel_masks

# what the Pruner itself sets on every pipeline run; the user's prune_options may not
_OWN_OPTIONS = frozenset({"rate", "criterion", "mode", "seed", "output", "global_ranking", "data", "loss",
                          "example_inputs", "device"})


class KeepCut(Criterion):
    """``inner``'s scores with the channels ``plan`` cut set to 0 (the rest kept above 0), so
    the selection cuts them first; ``inner=None`` scores every live channel 1 (the survivors)."""

    def __init__(self, inner: Criterion | None, plan: Plan, name: str):
        self.inner, self.plan, self.name = inner, plan, name
        # the pipeline reads these from the instance: they are the inner criterion's
        self.needs_data = bool(inner is not None and inner.needs_data)
        self.self_normalised = bool(inner is not None and inner.self_normalised)
        self.scores_are_parts = bool(inner is not None and inner.scores_are_parts)
        self.unscored_reason = inner.unscored_reason if inner is not None else Criterion.unscored_reason

    def prepare(self, model: nn.Module, layers: list[LayerView], data: Any) -> None:
        if self.inner is not None:
            self.inner.prepare(model, layers, data)

    def score(self, layer: LayerView) -> torch.Tensor | None:
        cut = self.plan.get(layer.name)
        if self.inner is None:  # the survivors: a layer the plan leaves whole stays unscored, so whole
            if cut is None or cut.out is None:
                return None
            raw = torch.ones(L.out_width(layer.module), dtype=torch.float64)
        else:
            raw = self.inner.score(layer)
        if raw is None or cut is None or cut.out is None or cut.axis is not None or raw.dim() != 1:
            return raw
        raw = raw.detach().double()
        if len(cut.out) and int(cut.out.max()) >= len(raw):
            return raw  # scores in another numbering (fused parts): the superset check below decides
        # a live channel with a zero or negative score still ranks above every cut one
        floor = float(raw.abs().max()) * 1e-9 + 1e-30
        alive = torch.zeros(len(raw), dtype=torch.bool, device=raw.device)  # scores made on --device stay there
        alive[cut.out.to(raw.device)] = True
        return torch.where(alive, raw.clamp_min(floor), torch.zeros_like(raw))


@dataclass
class ChannelPruning:
    """The structured side of a ``Pruner``: the plan so far, the options every pipeline run gets."""

    example_inputs: torch.Tensor
    criterion: Criterion
    global_ranking: bool = False
    data: CalibrationData | None = None  # for data-driven criteria (read once, checked up front)
    options: dict[str, Any] = field(default_factory=dict)  # more prunectl.prune keywords
    plan: Plan = field(default_factory=dict)
    rate: float = 0.0
    layers: tuple[str, ...] = ()  # layer by layer: --only globs of the layers cut so far (empty: all)
    # where each event's pipeline run scores (data-driven criteria) and proves: None, the live
    # model's own device at that event (a Lightning module is moved after the callback is set up)
    device: torch.device | None = None

    @classmethod
    def of(cls, criterion: str | Criterion, example_inputs: Any, data: Any, loss: Any, global_ranking: bool,
           options: dict[str, Any] | None, device: Any = None) -> ChannelPruning:
        if example_inputs is None:
            raise SpecError("Pruner: mode='structured' needs example_inputs= (a batch the model runs on: the "
                            "pipeline traces the model on it)")
        example = example_input(example_inputs)
        instance = get_criterion(criterion) if isinstance(criterion, str) else criterion
        if not isinstance(instance, Criterion):
            raise SpecError(f"Pruner: criterion: expected a name or a prunectl Criterion instance, got "
                            f"{type(criterion).__name__}")
        options = dict(options or {})
        taken = sorted(set(options) & _OWN_OPTIONS)
        if taken:
            raise SpecError(f"Pruner: prune_options: {taken[0]!r} is set by the Pruner itself (pass it to the Pruner "
                            "or the schedule)")
        batches = None
        if data is not None:  # a loader of the wrong shapes fails here, not at the first event
            batches = calibration_batches(data, example, loss, source="Pruner: data")
        elif instance.needs_data:
            raise SpecError(f"Pruner: criterion {instance.name!r} scores channels from data: give data= (a "
                            "DataLoader or an iterable of (inputs, targets) batches)")
        where = None if device is None else resolve_device(device, "Pruner: device")
        return cls(example, instance, global_ranking, batches, options, device=where)

    def cut(self, model: nn.Module, rate: float, seed: int, layers: tuple[str, ...] = ()) -> Plan:
        """Raise the cut to ``rate`` (of every group's channels) on the live ``model``; the new plan.
        ``layers`` (layer by layer): globs of the layers this event adds; only the groups holding
        them or the layers of earlier events are cut."""
        active = self.layers + tuple(pattern for pattern in layers if pattern not in self.layers)
        result = self._run(model, rate, KeepCut(self.criterion, self.plan, self.criterion.name), seed, active)
        _check_superset(self.plan, result.plan)
        apply_channel_masks(model, result.plan)
        self.plan, self.rate, self.layers = result.plan, rate, active
        return result.plan

    def finish(self, model: nn.Module, seed: int) -> PruneResult:
        """The hard-pruned model of the current plan (soft == hard verified by the pipeline)."""
        with warnings.catch_warnings():  # the groups left whole were warned about at the events already
            warnings.filterwarnings("ignore", message="criterion .* leaves .* unpruned")
            result = self._run(model, self.rate, KeepCut(None, self.plan, self.criterion.name), seed, self.layers)
        if kept_by_layer(result.plan) != kept_by_layer(self.plan):
            raise VerificationError("Pruner.finish: the final pipeline run kept other channels than the masks "
                                    "(the rate, rounding or exclusions changed since the last event?)")
        return result

    def _run(self, model: nn.Module, rate: float, criterion: KeepCut, seed: int,
             layers: tuple[str, ...]) -> PruneResult:
        data = list(self.data.batches) if self.data is not None and criterion.needs_data else None
        loss = self.data.loss if data is not None else None
        device = self.device if self.device is not None else pipeline_device(model)
        options = {**self.options, "only": layers} if layers else self.options
        return prune(model, example_inputs=self.example_inputs, loss=loss, rate=rate, criterion=criterion,
                     global_ranking=self.global_ranking, seed=seed, data=data, device=device_name(device),
                     **options)


def pipeline_device(model: nn.Module) -> torch.device:
    """The live model's device, where the pipeline can run (a model on ``meta`` or another backend: the CPU)."""
    device = device_of(model)
    return device if device.type in ("cuda", "mps") else CPU


def _check_superset(previous: Plan, current: Plan) -> None:
    """Channels stay cut: every index ``current`` keeps, ``previous`` kept."""
    for name, before in previous.items():
        now = current.get(name)
        for side in ("out", "inp"):
            kept_before = getattr(before, side)
            if kept_before is None:
                continue
            kept_now = getattr(now, side) if now is not None else None
            revived = (kept_now is None) or bool((~torch.isin(kept_now, kept_before)).any())
            if revived:
                raise VerificationError(f"Pruner: the event's plan would bring back channels of {name!r} an earlier "
                                        "event cut (a criterion scoring cut channels above live ones?)")
