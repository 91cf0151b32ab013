"""``Pruner``: pruning inside the user's own training loop.

    pruner = prunectl.Pruner(model, schedule=agp(0.8, start=1, end=8))
    for epoch in range(10):
        train_one_epoch(model, optimizer)
        pruner.step(epoch)
    pruner.finish()

Masks live on the model the way ``torch.nn.utils.prune`` keeps them (``weight_orig`` parameter,
``weight_mask`` buffer, a forward pre-hook), so the user's optimizer, checkpoints and
``torch.nn.utils.prune.remove`` work as with torch's own pruning, and a state_dict saved
mid-training loads in prunectl (its ``*_orig``/``*_mask`` pairs are folded on reading). The
masks themselves come from ``selection/unstructured.py``: the same ranking as
``prunectl prune --mode unstructured``, which equals torch's ``l1_unstructured`` /
``global_unstructured`` mask for mask. ``finish`` makes them permanent.

``mode="structured"`` cuts whole channels instead (structured.py): each event runs the
``prunectl.prune`` pipeline on the masked model, its plan becomes channel masks of the same
kind, and ``finish`` hard-prunes: ``pruner.result`` is a ``PruneResult`` (the smaller model,
its plan, ``save(dir)`` for the bundle ``prunectl prune`` writes).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

from ..api import PruneResult
from ..criteria.base import Criterion
from ..cut.plan import ModuleCut
from ..errors import SpecError
from ..layers.kinds import kind_of
from ..loading.state_dict import ORIG
from ..selection.unstructured import entry_criterion, unstructured_masks
from .channel_masks import install_statistics, make_permanent, refresh_masked
from .schedules import Event, one_shot
from .slimming import NormSparsity
from .structured import ChannelPruning

MODES = ("unstructured", "structured")

Parameters = Iterable[tuple[nn.Module, str]] | Iterable[str] | None


class Pruner:
    """Prunes ``model``'s weights at the events of ``schedule`` (prunectl.hooks.schedules).

    ``parameters``: ``(module, name)`` pairs as torch and Lightning take them, or dotted names
    (``"features.0.weight"``); default: the weight of every conv and linear layer (and its bias
    with ``prune_bias``). ``criterion``: ``l1`` (torch's ``L1Unstructured``), ``random``, or any
    criterion that scores single entries (a registered name or a ``Criterion`` instance).
    ``global_ranking``: one ranking over all the tensors (torch's ``global_unstructured``).
    ``rewind``: for lottery-ticket events, where the surviving weights go back to: ``"init"``
    (the weights when the Pruner was made: Frankle & Carbin 2019) or an epoch ``k`` (the weights
    after epoch k's training: Frankle et al. 2020); every parameter of the model is rewound, not
    only the pruned ones, as in the papers. ``slimming``: an L1 penalty on norm-layer scales
    (network slimming, Liu et al. 2017), added to their gradients until ``finish``.

    ``mode="structured"``: channels, by any channel criterion (``l1``, ``bn_scale``, ``taylor``
    with ``data=``), the event's sparsity being the fraction of every group's channels cut
    (global ranking: of all channels); ``example_inputs`` (a batch the model runs on) is needed,
    ``prune_options`` are more ``prunectl.prune`` keywords (``round_to``, ``exclude``,
    ``model``/``factory_args`` for a model its class does not rebuild). ``evaluate(model) ->
    float``: called after each event, its value logged in ``sparsity_log``.

    Devices: the Pruner works where the model is and never moves it. Masks are made on each
    parameter's own device; ``device`` (structured mode: ``cpu``, ``cuda``, ``cuda:N``, ``mps``) is
    where each event's pipeline run scores channels on ``data`` and proves the cut, by default the
    model's own device at the event (the pipeline itself works on a CPU copy, so the plan, and the
    bundle of ``finish().save``, do not depend on it but through data-driven scores).
    """

    def __init__(self, model: nn.Module, schedule: list[Event] | None = None, *, parameters: Parameters = None,
                 criterion: str | Criterion = "l1", global_ranking: bool = False, prune_bias: bool = False,
                 rewind: str | int = "init", slimming: float = 0.0, seed: int = 0, mode: str = "unstructured",
                 example_inputs: Any = None, data: Any = None, loss: Callable | None = None,
                 prune_options: dict[str, Any] | None = None, evaluate: Callable[[nn.Module], float] | None = None,
                 device: Any = None):
        if not isinstance(model, nn.Module):
            raise SpecError(f"Pruner: model must be a torch.nn.Module, got {type(model).__name__}")
        if mode not in MODES:
            raise SpecError(f"Pruner: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if evaluate is not None and not callable(evaluate):
            raise SpecError(f"Pruner: evaluate must be a callable evaluate(model) -> float, got "
                            f"{type(evaluate).__name__}")
        self.model, self.mode, self.evaluate = model, mode, evaluate
        self.schedule = list(schedule) if schedule is not None else one_shot(0.5)
        if not self.schedule or not all(isinstance(event, Event) for event in self.schedule):
            raise SpecError("Pruner: schedule must be a non-empty list of Event (see prunectl.hooks.schedules)")
        self.criterion = criterion
        self.channels: ChannelPruning | None = None
        if mode == "structured":
            _check_structured(self.schedule, parameters, prune_bias, global_ranking, prune_options)
            self.channels = ChannelPruning.of(criterion, example_inputs, data, loss, global_ranking, prune_options,
                                              device)
        else:
            if example_inputs is not None or data is not None or prune_options is not None or device is not None:
                raise SpecError("Pruner: example_inputs, data, prune_options and device are for mode='structured' "
                                "(unstructured masks are made where the parameters are)")
            entry_criterion(criterion)  # an unknown or channel-only criterion fails here, not at the first event
            if global_ranking and criterion == "random":
                raise SpecError("Pruner: random ranks per tensor; global ranking needs l1 or a criterion's entry "
                                "scores")
        self.global_ranking, self.seed = global_ranking, seed
        self.targets = _targets(model, parameters, prune_bias)
        self._check_layers()
        self.rewind_to = _check_rewind(rewind, self.schedule)
        self.rewind_state: dict[str, torch.Tensor] | None = _snapshot(model) if rewind == "init" else None
        self.done: set[int] = set()
        self.sparsity_log: list[dict[str, Any]] = []
        self.result: PruneResult | None = None  # structured mode, after finish: the hard-pruned model
        self.slimming = NormSparsity(model, slimming) if slimming else None
        # a state_dict saved mid-training holds weight_orig/weight_mask: loading it into a fresh model
        # (resuming) needs the same reparametrisation first
        self._load_hook = model.register_load_state_dict_pre_hook(self._accept_masks)

    def _accept_masks(self, _module: nn.Module, state_dict: dict, prefix: str, *_args: Any) -> None:
        # structured masks also sit on norms and readers' biases: any parameter with a saved mask
        for module_name, module in self.model.named_modules():
            for name in list(module._parameters):
                key = f"{prefix}{module_name}.{name}" if module_name else prefix + name
                if key + "_mask" in state_dict and not hasattr(module, name + "_mask"):
                    torch_prune.identity(module, name)

    # -- the training loop's calls -------------------------------------------------------------
    def step(self, epoch: int) -> bool:
        """After epoch ``epoch``'s training: run the events scheduled then (once each). True if it cut."""
        if epoch == self.rewind_to and self.rewind_state is None:
            self.rewind_state = _snapshot(self.model)
        cut = False
        for index, event in enumerate(self.schedule):
            if event.epoch == epoch and index not in self.done:
                self._apply(index, event)
                self.done.add(index)
                cut = True
        return cut

    def finish(self) -> nn.Module:
        """Make every mask permanent (``torch.nn.utils.prune.remove``), drop the sparsity hooks,
        and return the model; plain parameters again, zeros where cut.

        Structured mode: hard-prune first (``self.result``, a ``PruneResult``) and return the
        smaller model; the model given to the Pruner keeps its shapes, zeros where cut."""
        if self.channels is not None and self.result is None:
            self.result = self.channels.finish(self.model, self.seed)
        if self.channels is not None:
            make_permanent(self.model)
        for module, name in self.targets.values():
            if torch_prune.is_pruned(module) and hasattr(module, name + "_mask"):
                torch_prune.remove(module, name)
        if self.slimming is not None:
            self.slimming.remove()
            self.slimming = None
        self._load_hook.remove()
        return self.result.model if self.result is not None else self.model

    def sparsity(self) -> dict[str, float]:
        """Cut entries per pruned tensor (fraction), and ``"total"`` over all of them: the masks' zeros
        while pruning, the weights' own zeros after :meth:`finish`."""
        zeros = total = 0
        out: dict[str, float] = {}
        for key, (module, name) in self.targets.items():
            mask = _mask_of(module, name)
            # after finish() no mask remains: the cut entries are the tensor's own zeros
            cut = int((mask == 0).sum()) if mask is not None else int((_tensor(module, name) == 0).sum())
            out[key] = cut / _tensor(module, name).nelement()
            zeros, total = zeros + cut, total + _tensor(module, name).nelement()
        out["total"] = zeros / total if total else 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs besides the model's own state_dict (which holds the masks);
        structured mode: also the plan so far (plain lists) and its rate."""
        state: dict[str, Any] = {"done": sorted(self.done), "rewind_state": self.rewind_state}
        if self.channels is not None:
            state["channels"] = {"rate": self.channels.rate, "plan": _plain_plan(self.channels.plan),
                                 "layers": list(self.channels.layers)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        keys = {"done", "rewind_state"} | ({"channels"} if self.channels is not None else set())
        if not isinstance(state, dict) or set(state) != keys:
            raise SpecError("Pruner.load_state_dict: expected the dict Pruner.state_dict() returns (of a Pruner "
                            f"in mode {self.mode!r})")
        self.done = set(state["done"])
        self.rewind_state = state["rewind_state"]
        if self.channels is not None:
            self.channels.rate = float(state["channels"]["rate"])
            self.channels.plan = _module_cuts(state["channels"]["plan"])
            self.channels.layers = tuple(state["channels"].get("layers", ()))  # absent in a state saved before
            install_statistics(self.model, self.channels.plan)

    # -- inside ----------------------------------------------------------------------------------
    def _check_layers(self) -> None:
        layers = {key.rsplit(".", 1)[0] for key in self.targets}
        for event in self.schedule:
            for name in event.layers or ():
                if not any(in_block(layer, (name,)) for layer in layers):
                    raise SpecError(f"Pruner: schedule names layer {name!r}, which is no pruned layer and holds "
                                    f"none (pruned layers: {', '.join(sorted(layers)) or 'none'})")

    def _apply(self, index: int, event: Event) -> None:
        if self.channels is not None and event.layers is not None:
            # layer by layer: the event's layers (or blocks) join those cut before, at the one rate
            self.channels.cut(self.model, float(event.target), self.seed + index,
                              block_patterns(event.layers, {key.rsplit(".", 1)[0] for key in self.targets}))
        elif self.channels is not None:
            rate = (max(self.channels.rate, float(event.target)) if event.target is not None else
                    1 - (1 - self.channels.rate) * (1 - float(event.of_remaining)))
            if rate > self.channels.rate:  # an AGP schedule's first event is 0: nothing to cut yet
                self.channels.cut(self.model, rate, self.seed + index)
        else:
            self._apply_unstructured(index, event)
        if event.rewind:
            self._rewind()
        self.sparsity_log.append({"epoch": event.epoch, **self.sparsity(), **self._metric(event)})

    def _metric(self, event: Event) -> dict[str, float]:
        if self.evaluate is None:
            return {}
        value = self.evaluate(self.model)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpecError(f"Pruner: evaluate() returned {value!r} after the event at epoch {event.epoch}; "
                            "expected a finite number (did the training diverge?)")
        return {"metric": float(value)}

    @torch.no_grad()
    def _apply_unstructured(self, index: int, event: Event) -> None:
        keys = [key for key in self.targets
                if event.layers is None or in_block(key.rsplit(".", 1)[0], event.layers)]
        tensors = {key: _tensor(*self.targets[key]).detach() for key in keys}
        alive = {key: _alive(self.targets[key]) for key in keys}
        modules = {key: self.targets[key][0] for key in keys}
        if event.of_remaining is not None:
            rate, rates = event.of_remaining, {key: event.of_remaining for key in keys}
        else:
            rate, rates = _counts(tensors, alive, float(event.target), self.global_ranking)
        masks = unstructured_masks(tensors, modules, self.criterion, rates, rate, self.global_ranking,
                                   self.seed + index, alive)
        for key, mask in masks.items():
            module, name = self.targets[key]
            if hasattr(module, name + "_mask"):
                getattr(module, name + "_mask").copy_(mask)  # the new mask already holds every old zero
            else:
                torch_prune.custom_from_mask(module, name, mask.to(torch.bool))
            setattr(module, name, _tensor(module, name))

    def _rewind(self) -> None:
        if self.rewind_state is None:
            raise SpecError(f"Pruner: rewind to epoch {self.rewind_to}, but step({self.rewind_to}) was never called "
                            "before the first lottery-ticket event")
        for name, param in self.model.named_parameters():
            saved = self.rewind_state.get(_plain(name))
            if saved is not None:
                param.data.copy_(saved)
        refresh_masked(self.model)  # the cached weight = orig * mask, as a forward would


def _check_structured(schedule: list[Event], parameters: Parameters, prune_bias: bool, global_ranking: bool,
                      options: dict[str, Any] | None) -> None:
    if parameters is not None or prune_bias:
        raise SpecError("Pruner: parameters and prune_bias are unstructured options; in mode='structured' a channel "
                        "takes its filter, bias and readers together (leave layers whole with "
                        "prune_options={'exclude': [...]})")
    by_layer = [event for event in schedule if event.layers is not None]
    if not by_layer:
        return
    # each layer event cuts its layers' groups and re-cuts the earlier ones at the same per-group rate
    # (their cut channels score 0, so the same ones go): one rate keeps every earlier cut as it was
    if len(by_layer) != len(schedule) or any(event.target is None for event in by_layer):
        raise SpecError("Pruner: in mode='structured' a layer-by-layer schedule is all layer events with a target "
                        "(prunectl.hooks.layer_by_layer), not mixed with whole-model or lottery events")
    if len({event.target for event in by_layer}) != 1:
        raise SpecError("Pruner: in mode='structured' every layer event cuts the same fraction of its groups' "
                        f"channels; the schedule has {sorted({event.target for event in by_layer})}")
    if global_ranking:
        raise SpecError("Pruner: a layer-by-layer schedule ranks each layer's channels on their own; "
                        "global_ranking is for whole-model schedules")
    if options and options.get("only"):
        raise SpecError("Pruner: prune_options 'only' is set by a layer-by-layer schedule (its layers)")


def in_block(layer: str, names: Iterable[str]) -> bool:
    """``layer`` is one of ``names`` or inside one of them (a block: ``layer1`` holds ``layer1.0.conv1``)."""
    return any(layer == name or layer.startswith(name + ".") for name in names)


def block_patterns(names: Iterable[str], layers: set[str]) -> tuple[str, ...]:
    """``--only`` globs for the schedule's names: a pruned layer itself, a block what it holds."""
    return tuple(name if name in layers else f"{name}.*" for name in names)


def _plain_plan(plan: dict[str, ModuleCut]) -> dict[str, dict[str, Any]]:
    return {name: {"out": None if cut.out is None else cut.out.tolist(),
                   "inp": None if cut.inp is None else cut.inp.tolist(), "axis": cut.axis, "count": cut.count}
            for name, cut in plan.items()}


def _module_cuts(plain: dict[str, dict[str, Any]]) -> dict[str, ModuleCut]:
    def tensor(values: list[int] | None) -> torch.Tensor | None:
        return None if values is None else torch.tensor(values, dtype=torch.long)
    return {name: ModuleCut(tensor(cut["out"]), tensor(cut["inp"]), cut["axis"], cut["count"])
            for name, cut in plain.items()}


def _targets(model: nn.Module, parameters: Parameters, prune_bias: bool) -> dict[str, tuple[nn.Module, str]]:
    names = {id(module): name for name, module in model.named_modules()}
    if parameters is None:
        kinds = ("weight", "bias") if prune_bias else ("weight",)
        pairs = [(module, kind) for module in model.modules() if kind_of(module) in ("conv", "linear")
                 for kind in kinds if isinstance(getattr(module, kind, None), torch.Tensor)]
    else:
        pairs = [_resolve(model, item) for item in parameters]
    if not pairs:
        raise SpecError("Pruner: the model has no conv or linear layer to prune (give parameters=...)")
    out = {}
    for module, name in pairs:
        if id(module) not in names:
            raise SpecError(f"Pruner: parameters: a {type(module).__name__} that is not part of the model")
        if not isinstance(_tensor(module, name), torch.Tensor):
            raise SpecError(f"Pruner: parameters: {names[id(module)] or 'model'} has no tensor {name!r}")
        out[f"{names[id(module)]}.{name}" if names[id(module)] else name] = (module, name)
    return out


def _resolve(model: nn.Module, item: Any) -> tuple[nn.Module, str]:
    if isinstance(item, str):
        path, _, name = item.rpartition(".")
        try:
            return (model.get_submodule(path) if path else model), name
        except AttributeError:
            raise SpecError(f"Pruner: parameters: the model has no module {path!r} (from {item!r})") from None
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], nn.Module) and isinstance(item[1], str):
        return item
    raise SpecError(f"Pruner: parameters: expected (module, name) pairs or dotted names, got {item!r}")


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    """The tensor the module computes with: ``orig * mask`` when pruned (its cached attribute is
    stale after an optimizer step until the next forward)."""
    mask = getattr(module, name + "_mask", None)
    return getattr(module, name + "_orig") * mask if mask is not None else getattr(module, name, None)


def _mask_of(module: nn.Module, name: str) -> torch.Tensor | None:
    return getattr(module, name + "_mask", None)


def _alive(target: tuple[nn.Module, str]) -> torch.Tensor | None:
    mask = _mask_of(*target)
    return None if mask is None or bool((mask != 0).all()) else mask != 0


def _counts(tensors: dict[str, torch.Tensor], alive: dict[str, torch.Tensor | None], target: float,
            global_ranking: bool) -> tuple[int, dict[str, int]]:
    """Entries to cut now so that ``target`` of all entries are cut (per tensor or in total)."""
    def cut(key: str) -> int:
        return 0 if alive[key] is None else int((~alive[key]).sum())
    per_key = {key: max(0, round(target * t.nelement()) - cut(key)) for key, t in tensors.items()}
    total = sum(t.nelement() for t in tensors.values())
    return max(0, round(target * total) - sum(cut(key) for key in tensors)), per_key


def _check_rewind(rewind: str | int, schedule: list[Event]) -> int | None:
    if rewind == "init":
        return None
    if isinstance(rewind, bool) or not isinstance(rewind, int) or rewind < 0:
        raise SpecError(f"Pruner: rewind must be 'init' or an epoch >= 0, got {rewind!r}")
    first = min((event.epoch for event in schedule if event.rewind), default=None)
    if first is not None and rewind > first:
        raise SpecError(f"Pruner: rewind epoch {rewind} comes after the first lottery-ticket event (epoch {first})")
    return rewind


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's value, under its plain name (``weight``, not ``weight_orig``)."""
    return {_plain(name): copy.deepcopy(param.detach()) for name, param in model.named_parameters()}


def _plain(name: str) -> str:
    """A parameter's name without torch.nn.utils.prune's ``_orig`` suffix."""
    return name.removesuffix(ORIG)
