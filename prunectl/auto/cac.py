"""Accuracy-controlled search: Fujitsu CAC's automatic pruning (``auto_prune``), on prunectl's groups.

One search step, as in CAC's ``auto_prune.py`` (docs/auto.md):

1. Per layer group, a *sensitivity* ``s = sum(1 / |dL/dw|)`` over its weights (zero gradients
   count as 1e7), averaged over the first validation batches (as CAC), and the loss ``L``.
2. Per group an error *threshold* ``th = (L_orig * (1 + loss_margin) - L_now) * s / numel``,
   scaled down so that the thresholds' L2 norm stays under an adaptive upper bound.
3. Per group, the largest candidate rate (default 0.2, 0.1, 0) whose *pruning error* (summed
   |w| of the removed output channels / the layer's weight count) is within its threshold.
4. All groups are cut at their rates; the model is retrained for at most ``epochs`` epochs,
   stopping as soon as the validation accuracy is back within ``max_drop`` points of the
   original. Accepted: the cut model becomes current, the sensitivities are recomputed and
   the upper bound grows; rejected: the model stays and the upper bound shrinks.
5. CAC's search ends when every rate is 0 or the upper bound turns negative; prunectl then spends
   the rest of the accuracy budget in single-group steps (``fine_steps.py``). The step or time
   budget ends the run at any point.

Where prunectl differs from CAC's code (each on purpose, see docs/auto.md): the gradients
are zeroed between the sensitivity batches (CAC lets them accumulate); the threshold maximum is taken
over values (CAC's ``max(thresholds.items())`` compares layer names); which channels go is
decided by the chosen criterion and coupled groups follow ``--group-reduce``; a proposal
already rejected from the same model is rejected again without retraining (CAC retrains it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup
from ..layers import kinds as L
from ..models.device import fed_on, on_device
from ..tasks import Task
from . import steps as S

ZERO_GRADIENT = 1e7  # CAC: a zero gradient counts as this, so 1/|g| stays finite
NO_DIFF = 1e6  # CAC's marker for "no error difference recorded"


def sensitivities(model: nn.Module, task: Task, groups: list[ChannelGroup], calc_iter: int,
                  device: torch.device | None = None) -> tuple[float, list[float | None]]:
    """(mean loss, per-group sensitivity) over the first ``calc_iter`` validation batches; model left in eval.

    Validation, as CAC: the loss of a model on its own training data is near zero and would
    make the thresholds' loss ratio meaningless; nothing is trained on these batches."""
    modules = dict(model.named_modules())
    batches = [batch for _, batch in zip(range(calc_iter), task.validation_batches())]
    totals: list[float | None] = [0.0 if g.prunable else None for g in groups]
    loss_sum = 0.0
    model.eval()
    with on_device(model, device):  # --device: the gradients are taken there, the sums read back as floats
        fed = fed_on(model, device)
        for inputs, targets in batches:
            model.zero_grad(set_to_none=True)
            loss = task.loss(fed(inputs), targets)
            loss.backward()
            loss_sum += float(loss.detach())
            for index, group in enumerate(groups):
                if not group.prunable:
                    continue
                for member in group.members:
                    grad = L.weight_of(modules[member.module]).grad if member.scored else None
                    if grad is not None:
                        magnitude = grad.detach().double().abs()
                        magnitude[magnitude == 0] = ZERO_GRADIENT
                        totals[index] += float((1.0 / magnitude).sum())
        model.zero_grad(set_to_none=True)
    count = max(len(batches), 1)
    return loss_sum / count, [None if t is None else t / count for t in totals]


def thresholds(state: dict[str, Any], numels: list[int | None], loss_margin: float) -> list[float | None]:
    loss_diff = state["loss_before"] * (1 + loss_margin) - state["loss_after"]
    return [None if s is None else loss_diff * s / n for s, n in zip(state["sensitivities"], numels)]


def scale_thresholds(sens: list[float | None], ths: list[float | None], upper_bound: float) -> list[float | None]:
    values = [t for t in ths if t is not None]
    max_s = max(s for s in sens if s is not None)
    if not values or max_s == 0:
        return ths
    if math.isinf(max_s):
        return [None if t is None else (upper_bound if math.isinf(t) else t * upper_bound) for t in ths]
    norm = float(np.linalg.norm(np.array(values) / max_s, ord=2)) * max_s
    if norm > upper_bound:
        return [None if t is None else t * upper_bound / norm for t in ths]
    return ths


@dataclass
class Choice:
    rate: float
    error: float
    inc: float
    dec: float
    kept: torch.Tensor


def choose_rate(ctx: S.Context, model: nn.Module, group: ChannelGroup, scores: list[torch.Tensor],
                rates: tuple[float, ...], threshold: float) -> Choice:
    """CAC's ``prune``: the largest candidate rate whose pruning error is within ``threshold``."""
    everything = torch.arange(group.size)
    inc: dict[float, float] = {}
    dec: dict[float, float] = {}
    for rate in sorted(rates, reverse=True):
        if rate == 0.0:
            return Choice(0.0, 0.0, 0.0, 0.0, everything)
        keep = S.keep_for_rate(group, rate, ctx.select)
        if keep >= group.size:
            continue  # this rate cuts nothing at this width
        kept = S.kept_indices(group, scores, rate, ctx.select)
        removed, count = S.removed_l1(model, group, kept)
        error = removed / max(count, 1)
        inc[rate], dec[rate] = max(0.0, error - threshold), max(0.0, threshold - error)
        if error <= threshold and len(kept):
            return Choice(rate, error, _smallest(inc), _smallest(dec), kept)
    return Choice(0.0, 0.0, 0.0, 0.0, everything)


def _smallest(diffs: dict[float, float]) -> float:
    if sum(diffs.values()) == 0:
        return NO_DIFF
    return float(min(v if v != 0 else NO_DIFF for v in diffs.values()))


def upper_bound_limit(ctx: S.Context, model: nn.Module, groups: list[ChannelGroup], ths: list[float | None],
                      rates: tuple[float, ...], scores: list) -> float:
    """CAC's ``initialize_upper_bound``: from the largest threshold and the largest error at the
    largest rate over the groups."""
    th_max = max(t for t in ths if t is not None)
    error_max = 0.0
    for group, group_scores in zip(groups, scores):
        if group_scores is None:
            continue
        kept = S.kept_indices(group, group_scores, max(rates), ctx.select)
        removed, count = S.removed_l1(model, group, kept)
        error_max = max(error_max, removed / max(count, 1))
    prunable = sum(1 for g in groups if g.prunable)
    return math.sqrt(max(th_max, error_max) ** 2 * prunable)


def update_upper_bound(accepted: bool, diffs: list[float], ths: list[float], upper_bound: float,
                       limit: float, scaling_factor: float) -> float:
    if accepted:
        scales = [1 + d / t if t else 1.0 for d, t in zip(diffs, ths)]
        scales = [s if s != 0 else 1.0 for s in scales]
        upper_bound *= max(scaling_factor, min(scales))
    else:
        scales = [1 - d / t if t else 1.0 for d, t in zip(diffs, ths)]
        upper_bound *= min(1 / scaling_factor, max(scales))
    return min(upper_bound, limit)
