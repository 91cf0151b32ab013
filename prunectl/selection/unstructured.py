"""Unstructured pruning (``--mode unstructured``): zero single weights, keep every shape.

Masks are computed exactly as ``torch.nn.utils.prune`` computes them, so the same weights
give the same masks: ``l1`` per layer is ``l1_unstructured`` (the ``round(rate * n)``
smallest |w| by ``torch.topk``), ``random`` is ``random_unstructured`` (``torch.rand`` scores,
the ``round(rate * n)`` largest are cut; drawn from a generator seeded by ``--seed`` and the
layer name instead of the global RNG), and ``--global`` is ``global_unstructured`` with
``L1Unstructured`` (one ``topk`` over all the layers' weights, concatenated in spec order).
Only the ``weight`` of listed conv/linear layers is pruned (as torch's examples do), never
biases or norm layers; layers with ``prune: false``, ``arg: null`` or matching ``--exclude``
are left dense. The masks are made permanent (multiplied into the weights, no
reparametrisation hooks), and the exported files stay dense.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..coupling.groups import build_groups
from ..errors import SpecError
from ..formats.spec import Spec
from ..layers import kinds as L
from ..seeding import named_generator
from .choice import Choice
from .exclude import check_patterns, is_excluded

CRITERIA = ("l1", "random")


def pruned_count(rate: float, size: int) -> int:
    """``torch.nn.utils.prune._compute_nparams_toprune`` for a float amount."""
    return round(rate * size)


def l1_mask(weight: torch.Tensor, rate: float) -> torch.Tensor:
    mask = torch.ones_like(weight)
    count = pruned_count(rate, weight.nelement())
    if count:
        mask.view(-1)[torch.topk(weight.abs().view(-1), k=count, largest=False).indices] = 0
    return mask


def random_mask(weight: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    mask = torch.ones_like(weight)
    count = pruned_count(rate, weight.nelement())
    if count:
        scores = torch.rand(weight.shape, generator=generator, dtype=weight.dtype)
        mask.view(-1)[torch.topk(scores.view(-1), k=count).indices] = 0
    return mask


def global_l1_masks(weights: dict[str, torch.Tensor], rate: float) -> dict[str, torch.Tensor]:
    """One L1 ranking over all weights, concatenated in order, split back per layer."""
    flat = torch.cat([w.reshape(-1) for w in weights.values()])
    mask = l1_mask(flat, rate)
    masks, start = {}, 0
    for name, weight in weights.items():
        masks[name] = mask[start:start + weight.nelement()].view_as(weight)
        start += weight.nelement()
    return masks


def target_layers(spec: Spec, model: nn.Module, exclude: tuple[str, ...]) -> dict[str, nn.Module]:
    check_patterns(exclude, spec.layer_names)
    modules = dict(model.named_modules())
    chosen = {}
    for layer in spec.layers:
        module = modules.get(layer.name)
        if module is None or L.kind_of(module) not in ("conv", "linear") or not layer.prunable:
            continue
        if is_excluded(layer.name, exclude):
            continue
        chosen[layer.name] = module
    return chosen


@torch.no_grad()
def choose_unstructured(spec: Spec, model: nn.Module, criterion: str, rate: float, global_ranking: bool,
                        exclude: tuple[str, ...] = (), seed: int = 0) -> Choice:
    """A masked copy of ``model`` and its sparsity report; no channel is removed."""
    if criterion not in CRITERIA:
        raise SpecError(f"--mode unstructured: criterion {criterion!r} is not supported; use one of "
                        f"{', '.join(CRITERIA)}")
    if global_ranking and criterion != "l1":
        raise SpecError("--mode unstructured --global ranks by magnitude; use --criterion l1")
    masked = copy.deepcopy(model)
    layers = target_layers(spec, masked, exclude)
    rates = {layer.name: layer.rate if layer.rate is not None else rate for layer in spec.layers}
    weights = {name: module.weight.detach() for name, module in layers.items()}
    if global_ranking:
        masks = global_l1_masks(weights, rate)
    elif criterion == "l1":
        masks = {name: l1_mask(w, rates[name]) for name, w in weights.items()}
    else:
        masks = {name: random_mask(w, rates[name], named_generator(seed, name)) for name, w in weights.items()}
    for name, module in layers.items():
        module.weight.mul_(masks[name])
    groups = build_groups(spec, model)
    return Choice(groups, [None] * len(groups), masked, {"sparsity": sparsity_report(masked, list(layers))})


def sparsity_report(model: nn.Module, names: list[str]) -> dict:
    """Zero weights per pruned layer, over the pruned layers, and over all parameters."""
    modules = dict(model.named_modules())
    per_layer = {}
    zeros = total = 0
    for name in names:
        weight = modules[name].weight
        count = int((weight == 0).sum())
        per_layer[name] = {"zeros": count, "weights": weight.nelement(),
                           "sparsity": round(count / weight.nelement(), 6)}
        zeros, total = zeros + count, total + weight.nelement()
    all_zeros = sum(int((p == 0).sum()) for p in model.parameters())
    all_params = sum(p.nelement() for p in model.parameters())
    return {"mode": "unstructured", "layers": per_layer,
            "pruned_layers": {"zeros": zeros, "weights": total, "sparsity": round(zeros / total, 6) if total else 0.0},
            "model": {"zeros": all_zeros, "params": all_params, "sparsity": round(all_zeros / all_params, 6)}}
