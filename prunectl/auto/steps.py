"""What both search algorithms do to the current model: score, cut one proposal, measure it.

A proposal is a kept-index tensor per channel group of the *current* (already narrowed)
model; cutting it goes through the core stages (groups -> plan -> soft and hard prune ->
soft-vs-hard verification), so every accepted step is verified like ``prunectl prune``. The
kept indices are composed into the original numbering as the search goes, so the final
bundle's ``kept`` describes the whole run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup
from ..coupling.groups import build_groups
from ..criteria.base import Criterion, LayerView
from ..cut.hard import hard_prune
from ..cut.plan import make_plan
from ..cut.soft import soft_prune
from ..formats.spec import Spec
from ..layers import kinds as L
from ..measure.size import count_macs, count_params
from ..models.device import fed_on, on_device
from ..selection.per_layer import SelectOptions, aligned_at_most, kept_count, select_group, select_width
from ..selection.scoring import score_groups
from ..selection.strategy import pin_excluded
from ..verification.soft_vs_hard import soft_vs_hard

Kept = list[torch.Tensor | None]


@dataclass
class Context:
    """Everything fixed for the whole run."""

    spec: Spec
    criterion: Criterion
    select: SelectOptions
    data: Any  # calibration data for data-driven criteria, else None
    inputs: list[torch.Tensor]  # verification inputs (the spec's input shape)
    seed: int
    exclude: tuple[str, ...] = ()  # --exclude globs: their groups are pinned for the whole run
    original_groups: list[ChannelGroup] = field(default_factory=list)
    device: torch.device | None = None  # --device: scoring on data and the proofs run there (None: the CPU)


def groups_of(ctx: Context, model: nn.Module) -> list[ChannelGroup]:
    groups = pin_excluded(build_groups(ctx.spec, model), ctx.exclude)
    if [g.layers for g in groups] != [g.layers for g in ctx.original_groups]:
        raise AssertionError("channel groups changed during the search")  # a prunectl bug, not user input
    return groups


def scores_of(ctx: Context, model: nn.Module, groups: list[ChannelGroup]) -> list[list[torch.Tensor] | None]:
    return score_groups(groups, model, ctx.criterion, ctx.data, ctx.seed, ctx.device)


def keep_for_rate(group: ChannelGroup, rate: float, select: SelectOptions) -> int:
    return kept_count(group.size, min(rate, 0.999999), select, group.blocks, group.unit)


def kept_indices(group: ChannelGroup, scores: list[torch.Tensor], rate: float, select: SelectOptions) -> torch.Tensor:
    return select_group(group, scores, min(rate, 0.999999), select)


def aligned_width(group: ChannelGroup, width: int, select: SelectOptions) -> int:
    """The widest width the group may be cut to that is at most ``width`` (``--round-to``, blocks,
    ``--min-channels``)."""
    return aligned_at_most(group.size, width, select, group.blocks, group.unit)


def kept_at_width(group: ChannelGroup, scores: list[torch.Tensor], width: int, select: SelectOptions) -> torch.Tensor:
    return select_width(group, scores, width, select)


def removed_l1(model: nn.Module, group: ChannelGroup, kept: torch.Tensor) -> tuple[float, int]:
    """(summed |w| of the removed output channels of the group's scored layers, their weight count):
    CAC's pruning error is the first divided by the second."""
    modules = dict(model.named_modules())
    dropped = torch.ones(group.size, dtype=torch.bool)
    dropped[kept] = False
    total, count = 0.0, 0
    for member in group.members:
        if not member.scored:
            continue
        weights = LayerView(member.module, modules[member.module],
                            parts=group.parts(member.module)).out_channel_weights()
        per_channel = weights.abs().sum(1).view(group.size, member.factor).sum(1)
        total += float(per_channel[dropped].sum())
        count += weights.numel()
    return total, count


def cut(ctx: Context, model: nn.Module, groups: list[ChannelGroup], kept: Kept) -> tuple[nn.Module, float]:
    """(hard-pruned copy, soft-vs-hard max abs error); VerificationError if they disagree."""
    plan = make_plan(groups, kept)
    hard, _ = hard_prune(model, plan)
    comparison = soft_vs_hard(soft_prune(model, plan), hard, ctx.inputs, plan,
                              list(ctx.spec.layer_names), ctx.device)
    return hard.eval(), comparison.max_abs


def compose(total: Kept, kept: Kept) -> Kept:
    return [t if k is None or t is None else t[k] for t, k in zip(total, kept)]


def unchanged(groups: list[ChannelGroup]) -> Kept:
    return [None if not g.prunable else torch.arange(g.size) for g in groups]


def measure(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    return {"params": count_params(model), "macs": count_macs(model, example)}


def widths(ctx: Context, model: nn.Module) -> dict[str, int]:
    """Output width of every listed conv/linear layer (norm layers follow theirs)."""
    modules = dict(model.named_modules())
    return {name: L.out_width(modules[name]) for name in ctx.spec.layer_names
            if name in modules and L.kind_of(modules[name]) != "norm"}


def validation_loss(model: nn.Module, task: Any, device: torch.device | None = None) -> float:
    """The task's loss over its validation batches, per example: it breaks the ties of a
    saturated metric (on 360 images, many candidates score the same accuracy). On ``device``,
    the outputs brought back to the CPU for the task's loss."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), on_device(model, device):
        fed = fed_on(model, device)
        for inputs, targets in task.validation_batches():
            total += float(task.loss(fed(inputs), targets)) * len(targets)
            count += len(targets)
    return total / max(count, 1)


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rebuild_current(ctx: Context, original: nn.Module, total: Kept, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The current model from the original, the kept channels (original numbering) and its weights."""
    model, _ = hard_prune(original, make_plan(ctx.original_groups, total))
    model.load_state_dict(weights, strict=True)
    return model.eval()
