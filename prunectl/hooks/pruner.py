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
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

from ..criteria.base import Criterion
from ..errors import SpecError
from ..layers.kinds import kind_of
from ..loading.state_dict import ORIG
from ..selection.unstructured import entry_criterion, unstructured_masks
from .schedules import Event, one_shot
from .slimming import NormSparsity

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
    """

    def __init__(self, model: nn.Module, schedule: list[Event] | None = None, *, parameters: Parameters = None,
                 criterion: str | Criterion = "l1", global_ranking: bool = False, prune_bias: bool = False,
                 rewind: str | int = "init", slimming: float = 0.0, seed: int = 0):
        if not isinstance(model, nn.Module):
            raise SpecError(f"Pruner: model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.schedule = list(schedule) if schedule is not None else one_shot(0.5)
        if not self.schedule or not all(isinstance(event, Event) for event in self.schedule):
            raise SpecError("Pruner: schedule must be a non-empty list of Event (see prunectl.hooks.schedules)")
        self.criterion = criterion
        entry_criterion(criterion)  # an unknown or channel-only criterion fails here, not at the first event
        if global_ranking and criterion == "random":
            raise SpecError("Pruner: random ranks per tensor; global ranking needs l1 or a criterion's entry scores")
        self.global_ranking, self.seed = global_ranking, seed
        self.targets = _targets(model, parameters, prune_bias)
        self._check_layers()
        self.rewind_to = _check_rewind(rewind, self.schedule)
        self.rewind_state: dict[str, torch.Tensor] | None = _snapshot(model) if rewind == "init" else None
        self.done: set[int] = set()
        self.sparsity_log: list[dict[str, Any]] = []
        self.slimming = NormSparsity(model, slimming) if slimming else None
        # a state_dict saved mid-training holds weight_orig/weight_mask: loading it into a fresh model
        # (resuming) needs the same reparametrisation first
        self._load_hook = model.register_load_state_dict_pre_hook(self._accept_masks)

    def _accept_masks(self, _module: nn.Module, state_dict: dict, prefix: str, *_args: Any) -> None:
        for key, (module, name) in self.targets.items():
            if prefix + key + "_mask" in state_dict and not hasattr(module, name + "_mask"):
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
        and return the model; plain parameters again, zeros where cut."""
        for module, name in self.targets.values():
            if torch_prune.is_pruned(module) and hasattr(module, name + "_mask"):
                torch_prune.remove(module, name)
        if self.slimming is not None:
            self.slimming.remove()
            self.slimming = None
        self._load_hook.remove()
        return self.model

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
        """What a resumed run needs besides the model's own state_dict (which holds the masks)."""
        return {"done": sorted(self.done), "rewind_state": self.rewind_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or set(state) != {"done", "rewind_state"}:
            raise SpecError("Pruner.load_state_dict: expected the dict Pruner.state_dict() returns")
        self.done = set(state["done"])
        self.rewind_state = state["rewind_state"]

    # -- inside ----------------------------------------------------------------------------------
    def _check_layers(self) -> None:
        layers = {key.rsplit(".", 1)[0] for key in self.targets}
        for event in self.schedule:
            for name in event.layers or ():
                if name not in layers:
                    raise SpecError(f"Pruner: schedule names layer {name!r}, which has no pruned parameter "
                                    f"(pruned layers: {', '.join(sorted(layers)) or 'none'})")

    @torch.no_grad()
    def _apply(self, index: int, event: Event) -> None:
        keys = [key for key in self.targets
                if event.layers is None or key.rsplit(".", 1)[0] in event.layers]
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
        if event.rewind:
            self._rewind()
        self.sparsity_log.append({"epoch": event.epoch, **self.sparsity()})

    def _rewind(self) -> None:
        if self.rewind_state is None:
            raise SpecError(f"Pruner: rewind to epoch {self.rewind_to}, but step({self.rewind_to}) was never called "
                            "before the first lottery-ticket event")
        for name, param in self.model.named_parameters():
            saved = self.rewind_state.get(_plain(name))
            if saved is not None:
                param.data.copy_(saved)
        for module, name in self.targets.values():  # the cached weight = orig * mask, as a forward would
            if hasattr(module, name + "_mask"):
                setattr(module, name, _tensor(module, name))


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
