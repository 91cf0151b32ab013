"""Unstructured pruning (``--mode unstructured``): zero single weights, keep every shape.

Masks are computed exactly as ``torch.nn.utils.prune`` computes them, so the same weights
give the same masks: ``l1`` per layer is ``l1_unstructured`` (the ``round(rate * n)``
smallest |w| by ``torch.topk``), ``random`` is ``random_unstructured`` (``torch.rand`` scores,
the ``round(rate * n)`` largest are cut; drawn from a generator seeded by ``--seed`` and the
layer name instead of the global RNG), and ``--global`` is ``global_unstructured`` with
``L1Unstructured`` (one ``topk`` over all the layers' weights, concatenated in spec order).
Any other registered criterion that scores single entries (``Criterion.score_entries``:
``lamp``, ``l2``, plugins) ranks the entries the same way, smallest scores cut first.

The amount is a fraction in [0, 1) or, as torch takes it, an int count of entries (per
tensor; in total with ``--global``). Pruning compounds as torch's ``PruningContainer`` does:
entries already exactly zero count as pruned (a re-pruned unstructured bundle, a checkpoint
whose ``*_mask`` were folded in), and the amount applies to the entries left, so 0.3 then 0.3
cuts 51 %. Only the ``weight`` of listed conv/linear layers is pruned (as torch's examples
do), and their ``bias`` too when asked (``--prune-bias``); never norm layers; layers with
``prune: false``, ``arg: null`` or matching ``--exclude`` are left dense. The masks are made
permanent (multiplied into the weights, no reparametrisation hooks), and the exported files
stay dense.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..coupling.groups import build_groups
from ..criteria.base import Criterion, LayerView, get_criterion
from ..errors import SpecError
from ..formats.spec import Spec
from ..layers import kinds as L
from ..seeding import named_generator
from .choice import Choice
from .exclude import check_patterns, is_excluded

EXACT_CRITERIA = ("l1", "random")  # computed as torch computes them, bit for bit
Amount = float | int


def check_amount(amount: Amount, where: str = "--rate") -> None:
    """A fraction in [0, 1), or a count >= 0 (an int, as torch takes it; not a bool)."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise SpecError(f"{where}: expected a fraction in [0, 1) or an int count, got {amount!r}")
    if isinstance(amount, int):
        if amount < 0:
            raise SpecError(f"{where}: a count must be >= 0, got {amount}")
    elif not 0 <= amount < 1:
        raise SpecError(f"{where}: expected a fraction in [0, 1) or an int count, got {amount!r}")


def pruned_count(rate: Amount, size: int, where: str = "--rate") -> int:
    """``torch.nn.utils.prune._compute_nparams_toprune``: a fraction of ``size`` (rounded) or a count."""
    if isinstance(rate, int) and not isinstance(rate, bool):
        if rate > size:
            raise SpecError(f"{where}: {rate} entries to prune, but only {size} are left unpruned")
        return rate
    return round(rate * size)


def _cut_smallest(scores: torch.Tensor, alive: torch.Tensor | None, rate: Amount, where: str) -> torch.Tensor:
    """A 0/1 mask like ``scores``: among the ``alive`` entries (all when None), the smallest
    scores cut; entries not alive stay cut (torch's PruningContainer)."""
    mask = torch.ones_like(scores) if alive is None else alive.to(scores.dtype)
    flat = mask.view(-1)
    left = flat.nonzero().flatten() if alive is not None else None
    pool = scores.reshape(-1) if left is None else scores.reshape(-1)[left]
    count = pruned_count(rate, pool.nelement(), where)
    if count:
        cut = torch.topk(pool, k=count, largest=False).indices
        flat[cut if left is None else left[cut]] = 0
    return mask


def alive_entries(tensor: torch.Tensor) -> torch.Tensor | None:
    """The entries not yet pruned (not exactly zero); None when every entry is alive."""
    alive = tensor != 0
    return None if bool(alive.all()) else alive


def l1_mask(weight: torch.Tensor, rate: Amount, alive: torch.Tensor | None = None,
            where: str = "--rate") -> torch.Tensor:
    return _cut_smallest(weight.abs(), alive, rate, where).to(weight.dtype)


def random_mask(weight: torch.Tensor, rate: Amount, generator: torch.Generator,
                alive: torch.Tensor | None = None, where: str = "--rate") -> torch.Tensor:
    """torch's ``RandomUnstructured``: uniform scores over the live entries, the largest cut."""
    mask = torch.ones_like(weight) if alive is None else alive.to(weight.dtype)
    flat = mask.view(-1)
    left = None if alive is None else flat.nonzero().flatten()
    size = weight.nelement() if left is None else left.nelement()
    count = pruned_count(rate, size, where)
    if count:
        scores = torch.rand(weight.shape if left is None else (size,), generator=generator, dtype=weight.dtype)
        # drawn on the CPU (the seeded generator's), applied where the weight is: the same mask on every device
        cut = torch.topk(scores.view(-1), k=count).indices.to(weight.device)
        flat[cut if left is None else left[cut]] = 0
    return mask


def global_l1_masks(weights: dict[str, torch.Tensor], rate: Amount,
                    alive: dict[str, torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
    """One L1 ranking over all weights, concatenated in order, split back per layer."""
    return _split(weights, l1_mask(_flat(weights), rate, _flat_alive(weights, alive)))


def _flat(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def _flat_alive(tensors: dict[str, torch.Tensor], alive: dict[str, torch.Tensor | None] | None) -> torch.Tensor | None:
    if alive is None or all(a is None for a in alive.values()):
        return None
    return torch.cat([(a if a is not None else torch.ones_like(t, dtype=torch.bool)).reshape(-1)
                      for t, a in zip(tensors.values(), alive.values())])


def _split(tensors: dict[str, torch.Tensor], flat: torch.Tensor) -> dict[str, torch.Tensor]:
    masks, start = {}, 0
    for name, tensor in tensors.items():
        masks[name] = flat[start:start + tensor.nelement()].view_as(tensor)
        start += tensor.nelement()
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


def entry_criterion(name: str | Criterion) -> Criterion | None:
    """The criterion scoring single entries (a registered name or an instance), or None for
    torch's exact l1/random."""
    if isinstance(name, Criterion):
        criterion, name = name, name.name
    elif name in EXACT_CRITERIA:
        return None
    else:
        criterion = get_criterion(name)
    if not criterion.scores_entries():
        raise SpecError(f"--mode unstructured: criterion {name!r} scores whole channels only (no score_entries); "
                        "use l1, random, l2, lamp or a criterion that scores single weights")
    return criterion


def unstructured_masks(tensors: dict[str, torch.Tensor], modules: dict[str, nn.Module], criterion: str | Criterion,
                       rates: dict[str, Amount], rate: Amount, global_ranking: bool, seed: int = 0,
                       alive: dict[str, torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
    """Masks for ``tensors`` (keys ``layer.param``), compounding over their zeros (see the module),
    or over ``alive`` (per key: the live entries, None for all) when the caller holds masks."""
    scorer = entry_criterion(criterion)
    if global_ranking and scorer is None and criterion != "l1":
        raise SpecError("--mode unstructured --global ranks by magnitude or a criterion's entry scores; "
                        "--criterion random ranks per layer")
    alive = alive if alive is not None else {key: alive_entries(t) for key, t in tensors.items()}
    if scorer is not None:
        scores = {key: scorer.score_entries(LayerView(key.rsplit(".", 1)[0], modules[key], seed=seed), t).double()
                  for key, t in tensors.items()}
        if global_ranking:
            return _split(tensors, _cut_smallest(_flat(scores), _flat_alive(tensors, alive), rate, "--rate"))
        return {key: _cut_smallest(s, alive[key], rates[key], f"{key}: rate").to(tensors[key].dtype)
                for key, s in scores.items()}
    if global_ranking:
        return global_l1_masks(tensors, rate, alive)
    if criterion == "l1":
        return {key: l1_mask(t, rates[key], alive[key], f"{key}: rate") for key, t in tensors.items()}
    return {key: random_mask(t, rates[key], named_generator(seed, key.rsplit(".", 1)[0] if key.endswith(".weight")
                                                             else key), alive[key], f"{key}: rate")
            for key, t in tensors.items()}


@torch.no_grad()
def choose_unstructured(spec: Spec, model: nn.Module, criterion: str | Criterion, rate: Amount, global_ranking: bool,
                        exclude: tuple[str, ...] = (), seed: int = 0, params: tuple[str, ...] = ("weight",)
                        ) -> Choice:
    """A masked copy of ``model`` and its sparsity report; no channel is removed."""
    check_amount(rate)
    masked = copy.deepcopy(model)
    layers = target_layers(spec, masked, exclude)
    layer_rates = {layer.name: layer.rate if layer.rate is not None else rate for layer in spec.layers}
    tensors, modules, rates = {}, {}, {}
    for name, module in layers.items():
        for param in params:
            value = getattr(module, param, None)
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{param}"], modules[f"{name}.{param}"] = value.detach(), module
                rates[f"{name}.{param}"] = layer_rates[name]
    masks = unstructured_masks(tensors, modules, criterion, rates, rate, global_ranking, seed)
    for key, mask in masks.items():
        tensors[key].mul_(mask)
    groups = build_groups(spec, model)
    report = sparsity_report(masked, list(layers), params)
    report["amount"] = {"value": rate, "kind": "count" if isinstance(rate, int) else "fraction",
                        "of": "the entries not yet zero (torch's PruningContainer)"}
    return Choice(groups, [None] * len(groups), masked, {"sparsity": report})


def sparsity_report(model: nn.Module, names: list[str], params: tuple[str, ...] = ("weight",)) -> dict:
    """Zero weights per pruned layer, over the pruned layers, and over all parameters (biases,
    when pruned, under ``biases``)."""
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
    report = {"mode": "unstructured", "layers": per_layer,
              "pruned_layers": {"zeros": zeros, "weights": total,
                                "sparsity": round(zeros / total, 6) if total else 0.0},
              "model": {"zeros": all_zeros, "params": all_params, "sparsity": round(all_zeros / all_params, 6)}}
    if "bias" in params:
        biases = {name: modules[name].bias for name in names if modules[name].bias is not None}
        report["biases"] = {name: {"zeros": int((b == 0).sum()), "entries": b.nelement()}
                            for name, b in biases.items()}
    return report
