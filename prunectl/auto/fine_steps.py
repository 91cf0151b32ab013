"""Accuracy mode's finishing phase: once CAC's thresholds allow no cut (or its bound turns negative),
the rest of the ``--max-drop`` budget is spent in single-group steps checked by the metric itself.

CAC's thresholds come from the loss (``L_orig (1 + loss_margin) - L_now``), not from the accuracy
budget: a loose ``--max-drop`` accepts lossier steps, the loss rises, the thresholds reach zero
sooner, and the search used to stop with most of the budget unused, at a bigger model than a tight
budget reached (issue 15: digits MLP, --max-drop 2 and 5 ended at 2,985 parameters, 1 at 2,571).
Here each step cuts one group by its own rate (at first the smallest of ``--rates``), retrains and
keeps the cut if the validation metric is back within ``--max-drop``; a rejected group's rate
halves (finer steps after a rejection) down to one alignment step (``--round-to``), and a group
whose one-step cut is rejected from the current model is done until another cut is accepted. The
phase ends when every group is done: no single step fits the budget any more.

Which group first: the one whose proposed cut has the smallest pruning error (CAC's measure:
summed |w| of the removed channels / the weight count), ties by group order.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup
from . import steps as S


def start(groups: list[ChannelGroup], rates: tuple[float, ...]) -> dict[str, Any]:
    """The phase's JSON-able state: per group its current rate (None: not prunable) and whether it is done."""
    first = min((r for r in rates if r > 0), default=0.1)
    return {"rates": [first if g.prunable else None for g in groups], "done": [not g.prunable for g in groups]}


def proposal(ctx: S.Context, model: nn.Module, group: ChannelGroup, scores: list[torch.Tensor], rate: float
             ) -> tuple[torch.Tensor, bool, float] | None:
    """(kept indices, whether this is the smallest cut the group can make, pruning error), or None
    when the group cannot be cut at all (pinned, --min-channels)."""
    smallest = S.aligned_width(group, group.size - 1, ctx.select)  # one alignment step: 64 -> 56 with --round-to 8
    if smallest >= group.size:
        return None
    width = min(S.keep_for_rate(group, rate, ctx.select), smallest)
    kept = S.kept_at_width(group, scores, width, ctx.select)
    if len(kept) >= group.size:
        return None
    removed, count = S.removed_l1(model, group, kept)
    return kept, width >= smallest, removed / max(count, 1)


def choose(ctx: S.Context, model: nn.Module, groups: list[ChannelGroup], scores: list, fine: dict[str, Any]
           ) -> tuple[int, torch.Tensor, bool] | None:
    """(group index, kept indices, smallest cut?) of the next step, or None when every group is done."""
    best = None
    for index, (group, group_scores) in enumerate(zip(groups, scores)):
        if fine["done"][index] or group_scores is None:
            continue
        found = proposal(ctx, model, group, group_scores, fine["rates"][index])
        if found is None:
            fine["done"][index] = True
            continue
        kept, minimal, error = found
        if best is None or error < best[0]:
            best = (error, index, kept, minimal)
    return None if best is None else best[1:]


def record(fine: dict[str, Any], index: int, minimal: bool, accepted: bool) -> None:
    """After a step: an accepted cut changes the model, so every group may be tried again; a rejected
    one makes that group's steps finer, and ends it when it was already the smallest."""
    if accepted:
        fine["done"] = [rate is None for rate in fine["rates"]]
    elif minimal:
        fine["done"][index] = True
    else:
        fine["rates"][index] = fine["rates"][index] / 2
