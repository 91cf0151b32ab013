"""The selection strategy: per-layer rates or a global ranking, excluded layers, MACs/params
targets, and iterative pruning in steps (re-scoring the pruned model between steps).

Steps follow a schedule of the cumulative amount cut (Zhu & Gupta 2017's cubic AGP, or
linear): after step i of N, the fraction ``s_i`` of the final cut is done, with
``s_i = i/N`` (linear) or ``s_i = 1 - (1 - i/N)^3`` (agp: large cuts first, when the
network has the most redundancy). Between steps the model is hard-pruned and scored again;
the kept indices of all steps are composed into the original numbering, so the result is
one plan on the original model (soft-vs-hard verification applies to it as usual).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup
from ..coupling.groups import build_groups
from ..criteria.base import Criterion
from ..cut.hard import hard_prune
from ..cut.plan import make_plan
from ..errors import SpecError
from ..formats.spec import Spec
from ..options import SCHEDULES
from .budget import CostModel, SearchResult, Target, measure, search
from .choice import Choice
from .config_alignment import aligned, hidden_size_as_value, pin_value_hidden, stock_widths
from .exclude import check_patterns, is_excluded
from .global_ranking import floor_of, global_select, prunable_channels, remove_more
from .per_layer import SelectOptions, group_rate, kept_count, select_per_layer
from .scoring import score_groups
from .structures import apply_structure_rates


@dataclass(frozen=True)
class ChooseOptions:
    select: SelectOptions = SelectOptions()
    global_ranking: bool = False
    exclude: tuple[str, ...] = ()
    target: Target | None = None
    steps: int = 1
    schedule: str = "linear"
    seed: int = 0
    structure_rates: tuple[tuple[str, float], ...] = ()  # --rate-heads/-mlp/-hidden (structures.py)
    device: torch.device | None = None  # --device: where data-driven criteria run (scoring.score_groups)
    only: tuple[str, ...] = ()  # --only globs: every group holding none of their layers is pinned


def schedule_fraction(step: int, steps: int, schedule: str) -> float:
    """Fraction of the final cut done after ``step`` of ``steps``."""
    if schedule == "agp":
        return 1.0 - (1.0 - step / steps) ** 3
    return step / steps


def pin_excluded(groups: list[ChannelGroup], patterns: tuple[str, ...],
                 only: tuple[str, ...] = ()) -> list[ChannelGroup]:
    """Pin every group holding a layer whose name matches a glob of ``--exclude``, and with
    ``--only`` every group holding no layer that matches one of its globs (a channel group is cut
    as a whole: a matching layer brings in the layers its channels are coupled with)."""
    check_patterns(patterns, (layer for group in groups for layer in group.layers))
    check_patterns(only, (layer for group in groups for layer in group.layers), "--only")
    for pattern in patterns:
        for group in groups:
            for layer in group.layers:
                if is_excluded(layer, (pattern,)):
                    group.pinned_by.append(f"{layer}: --exclude {pattern}")
    if only:
        for group in groups:
            if not any(is_excluded(layer, only) for layer in group.layers):
                group.pinned_by.append(f"{group.layers[0]}: not in --only")
    return groups


def check_options(options: ChooseOptions) -> None:
    if options.steps < 1:
        raise SpecError(f"--steps: expected an integer >= 1, got {options.steps}")
    if options.schedule not in SCHEDULES:
        raise SpecError(f"--schedule: expected one of {', '.join(SCHEDULES)}, got {options.schedule!r}")


def choose(spec: Spec, model: nn.Module, criterion: Criterion, options: ChooseOptions, data=None,
           example: torch.Tensor | None = None) -> Choice:
    """Kept channels per group of ``model`` (original numbering), by steps, toward the rate or target."""
    check_options(options)
    original = pin_excluded(build_groups(spec, model), options.exclude, options.only)
    value_buffer = hidden_size_as_value(model)  # Gemma: the hidden width stays whole (config_alignment.py)
    value_note = pin_value_hidden(original, model, value_buffer)
    apply_structure_rates(original, model, dict(options.structure_rates))
    alignment = stock_widths(original, model)  # a stock config's hidden width and heads (config_alignment.py)
    aligned_notes: list[str] = [value_note] if value_note else []
    total_kept = [None if not g.prunable else torch.arange(g.size) for g in original]
    baseline = measure(model, example, options.target.kind) if options.target else None
    current = model
    history = []
    for step in range(1, options.steps + 1):
        done = schedule_fraction(step, options.steps, options.schedule)
        groups = pin_excluded(build_groups(spec, current), options.exclude, options.only)
        pin_value_hidden(groups, current, value_buffer)
        scores = score_groups(groups, current, criterion, data, options.seed, options.device)
        for index, (source, group) in enumerate(zip(original, groups)):
            if source.prunable and not group.prunable:  # pinned while scoring (a layer bn_scale cannot score)
                source.pinned_by.extend(group.pinned_by)  # the report's groups are the original ones
                total_kept[index] = None

        if options.target is not None:
            goal = 1.0 - done * (1.0 - options.target.fraction)

            found, refined = _search_target(original, groups, scores, current, example, baseline, goal, options)
            exact = _CostOf(groups, current, example, options.target.kind, baseline, exact=True)
            if abs(exact(found.value) - goal) > 0.01 * goal:  # layers the estimate does not model
                found, refined = _search_target(original, groups, scores, current, example, baseline, goal,
                                                options, exact=True)
            found.value = aligned(found.value, groups, scores, alignment, options.select, aligned_notes)
            found.achieved = exact(found.value)
            if found.unreachable and not found.within(goal):
                raise SpecError(f"--target-{options.target.kind} {options.target.fraction}: unreachable; the most "
                                f"that can be cut keeps {found.achieved:.4f} (pinned layers, --min-channels, "
                                "--exclude)")
            kept, entry = found.value, {"goal": round(goal, 6), "achieved": round(found.achieved, 6),
                                        "p": round(found.p, 6), "iterations": found.iterations,
                                        "extra_global_cut": refined}
        else:
            kept = aligned(_pick(original, groups, scores, options, done=done), groups, scores, alignment,
                           options.select, aligned_notes)
            entry = {}
        total_kept = [t if k is None or t is None else t[k] for t, k in zip(total_kept, kept)]
        if step < options.steps or options.target is not None:  # the caller prunes the final cut itself
            current, _ = hard_prune(current, make_plan(groups, kept))
        history.append({"step": step, "done": round(done, 6), **entry})
    report: dict[str, Any] = {"selection": {
        "mode": "global" if options.global_ranking else "per-layer", "steps": options.steps,
        "schedule": options.schedule, "exclude": list(options.exclude),
        **({"only": list(options.only)} if options.only else {})}}  # absent: the bytes of runs before --only
    if options.steps > 1 or options.target:
        report["selection"]["history"] = history
    if aligned_notes:
        report["selection"]["aligned"] = aligned_notes
    if options.target is not None:
        achieved = measure(current, example, options.target.kind) / baseline
        report["target"] = {"kind": options.target.kind, "goal": options.target.fraction,
                            "achieved": round(achieved, 6),
                            "within_1_percent": abs(achieved - options.target.fraction)
                                                <= 0.01 * options.target.fraction}
    return Choice(original, total_kept, model, report)


class _CostOf:
    """Kept fraction of MACs/params for kept indices: estimated (budget.CostModel) or exact;
    cached by widths, which alone decide it."""

    def __init__(self, groups: list[ChannelGroup], model: nn.Module, example: torch.Tensor, kind: str,
                 baseline: int, exact: bool = False) -> None:
        self.groups, self.model, self.example, self.kind, self.baseline = groups, model, example, kind, baseline
        self.estimate = None if exact else CostModel(model, example, kind, baseline)
        self.cache: dict[tuple, float] = {}

    def __call__(self, kept: list[torch.Tensor | None]) -> float:
        widths = tuple(None if k is None else len(k) for k in kept)
        if widths not in self.cache:
            plan = make_plan(self.groups, kept)
            if self.estimate is not None:
                self.cache[widths] = self.estimate(plan)
            else:
                pruned, _ = hard_prune(self.model, plan)
                self.cache[widths] = measure(pruned, self.example, self.kind) / self.baseline
        return self.cache[widths]


def _search_target(original: list[ChannelGroup], groups: list[ChannelGroup], scores: list, current: nn.Module,
                   example: torch.Tensor, baseline: int, goal: float, options: ChooseOptions,
                   exact: bool = False) -> tuple[SearchResult, bool]:
    cost = _CostOf(groups, current, example, options.target.kind, baseline, exact)

    def evaluate(p: float) -> tuple[object, float]:
        kept = _pick(original, groups, scores, options, p=p)
        return kept, cost(kept)

    found = search(evaluate, goal)
    if found.within(goal) or options.global_ranking or found.above is None:
        return found, False
    refined = _refine(found, goal, groups, scores, cost, options)
    return refined, refined is not found


def _refine(found: SearchResult, goal: float, groups: list[ChannelGroup], scores: list, cost: _CostOf,
            options: ChooseOptions) -> SearchResult:
    """Per-layer target between two uniform rates: cut a bisected number of extra channels,
    the lowest-ranked of the whole model, from the rate that keeps too much."""
    base = found.above
    spare = sum(len(k) - floor_of(g, options.select) for g, k in zip(groups, base) if k is not None)

    def evaluate(q: float) -> tuple[object, float]:
        kept = remove_more(groups, scores, base, round(q * spare), options.select)
        return kept, cost(kept)

    refined = search(evaluate, goal)
    refined.iterations += found.iterations
    refined.p = found.p
    return refined if abs(refined.achieved - goal) < abs(found.achieved - goal) else found


def _pick(original: list[ChannelGroup], groups: list[ChannelGroup], scores: list, options: ChooseOptions,
          done: float = 1.0, p: float | None = None) -> list[torch.Tensor | None]:
    """Kept indices per current group for a cumulative cut measured on the original model:
    ``done`` of the spec's rates (each layer's own, or the default), or, for a target, the
    searched ``p`` (one rate for every layer, or the fraction of all prunable channels)."""
    if [g.layers for g in original] != [g.layers for g in groups]:
        raise SpecError("the channel groups changed between steps; prune in one step (--steps 1)")
    select = options.select
    if options.global_ranking:
        fraction = p if p is not None else done * select.rate
        goal_removed = int(fraction * prunable_channels(original) + 1e-9)
        already = sum(o.size - g.size for o, g in zip(original, groups) if g.prunable)
        return global_select(groups, scores, max(0, goal_removed - already), select)
    source_of = {id(g): o for o, g in zip(original, groups)}

    def relative_rate(group: ChannelGroup) -> float:
        source = source_of[id(group)]
        rate = p if p is not None else done * group_rate(source, select.rate)
        keep = kept_count(source.size, min(rate, 0.999999), select, source.blocks, source.unit)
        return max(0.0, 1.0 - keep / group.size)

    return select_per_layer(groups, scores, relative_rate, select)
