"""Target mode: NetAdapt (Yang et al., ECCV 2018) toward a MACs or parameter budget.

One iteration, as in the paper: a resource reduction ``delta`` is asked for; for every layer
group a *proposal* removes just enough of that group's channels (chosen by the criterion) to
save ``delta``; each proposal gets a short fine-tune and is scored on held-out data; the most
accurate proposal becomes the next model. Iterations repeat until the target is met. Then an
optional long fine-tune (``--final-epochs``).

Differences from the paper (docs/auto.md): the resource is MACs or parameters counted by
``torch.utils.flop_counter`` (the paper uses measured latency/energy look-up tables); the held-out
data is the task's validation split; ``delta`` is a fraction of the original resource decaying
by ``DECAY`` each iteration and capped at what is left to the target; a group that cannot
save the full ``delta`` still proposes its largest possible cut; accuracy ties between
proposals (common on a small, saturated validation split) go to the lower validation loss. Proposals are independent,
so under torchrun they are spread over the ranks (proposal ``j`` on rank ``j % world``).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup
from ..cut.hard import hard_prune
from ..cut.plan import make_plan
from ..seeding import mix_seed
from ..tasks import Task
from ..training.distributed import Dist
from ..training.finetune import FineTuneOptions, fine_tune
from . import steps as S

DECAY = 0.96


def step_reduction(iteration: int, original: int, current: int, goal: int, fraction: float) -> int:
    """Resource units to save in this iteration (at least 1, at most what is left)."""
    wanted = math.ceil(fraction * original * DECAY ** iteration)
    return max(1, min(wanted, current - goal))


def proposals(ctx: S.Context, model: nn.Module, groups: list[ChannelGroup], scores: list, kind: str,
              delta: int) -> list[dict[str, Any]]:
    """One proposal per prunable group: its kept indices and the resource they leave."""
    example = ctx.inputs[0]
    now = S.measure(model, example)[kind]
    found = []
    for index, (group, group_scores) in enumerate(zip(groups, scores)):
        if group_scores is None:
            continue
        least = S.keep_for_rate(group, 0.999999, ctx.select)
        if least >= group.size:
            continue
        # the smallest cut this group can make is one alignment step (--round-to 8: 64 -> 56, 45 ->
        # 40), not one channel: a one-channel cut rounds back up to the full width and saves nothing
        first = S.aligned_width(group, group.size - 1, ctx.select)
        saved = now - _cost(ctx, model, groups, index, S.kept_at_width(group, group_scores, first, ctx.select), kind)
        if saved <= 0:
            continue
        per_channel = saved / (group.size - first)
        width = S.aligned_width(group, group.size - math.ceil(delta / per_channel), ctx.select)
        kept = S.kept_at_width(group, group_scores, width, ctx.select)
        if len(kept) >= group.size:
            continue
        found.append({"group": index, "layer": group.name, "kept": kept, "width": len(kept),
                      "rate": round(1 - len(kept) / group.size, 6),
                      "resource": _cost(ctx, model, groups, index, kept, kind)})
    return found


def _cost(ctx: S.Context, model: nn.Module, groups: list[ChannelGroup], index: int, kept: torch.Tensor,
          kind: str) -> int:
    plan_kept = [None] * len(groups)
    plan_kept[index] = kept
    pruned, _ = hard_prune(model, make_plan(groups, plan_kept))
    return S.measure(pruned, ctx.inputs[0])[kind]


def evaluate_proposals(ctx: S.Context, model: nn.Module, groups: list[ChannelGroup], found: list[dict[str, Any]],
                       task: Task, epochs: int, micro_batches: int, step: int, group: Dist,
                       on_event: Callable[[str, dict[str, Any]], None], lr: float | None = None
                       ) -> tuple[int, nn.Module, list[dict[str, Any]]]:
    """Fine-tune and score every proposal (this rank's share); (winner index, its model, results)."""
    mine: dict[int, tuple[dict[str, Any], nn.Module]] = {}
    for j, proposal in enumerate(found):
        if j % group.world != group.rank:
            continue
        kept = [None] * len(groups)
        kept[proposal["group"]] = proposal["kept"]
        candidate, error = S.cut(ctx, model, groups, kept)
        pruned_accuracy = float(task.metric(candidate))
        options = FineTuneOptions(epochs=epochs, seed=mix_seed(ctx.seed, step, j), micro_batches=micro_batches, lr=lr,
                                  device=ctx.device)
        on_event("candidate", {"layer": proposal["layer"], "width": proposal["width"]})
        log = fine_tune(candidate, task, options, Dist(), on_event)
        accuracy = float(task.metric(candidate))
        mine[j] = ({"index": j, "layer": proposal["layer"], "width": proposal["width"], "rate": proposal["rate"],
                    "resource": proposal["resource"], "pruned_accuracy": pruned_accuracy, "accuracy": accuracy,
                    "validation_loss": S.validation_loss(candidate, task, ctx.device), "soft_vs_hard_max_abs": error,
                    "epochs": len(log)}, candidate)
    results = sorted((r for part in group.gather_objects([m[0] for m in mine.values()]) for r in part),
                     key=lambda r: r["index"])
    # the paper's rule (most accurate), with the validation loss breaking accuracy ties
    best = max(results, key=lambda r: (r["accuracy"], -r["validation_loss"], -r["resource"], -r["index"]))
    owner = best["index"] % group.world
    weights = group.broadcast_object(S.weights_of(mine[best["index"]][1]) if group.rank == owner else None, owner)
    kept = [None] * len(groups)
    kept[found[best["index"]]["group"]] = found[best["index"]]["kept"]
    winner, _ = S.cut(ctx, model, groups, kept)
    winner.load_state_dict(weights, strict=True)
    return best["index"], winner.eval(), results
