"""Targets: search the rate (or the global cut) until MACs or params reach a fraction kept.

``--target-macs 0.5`` keeps half of the original MACs (``torch.utils.flop_counter``, as in
the report). The search bisects one number p in [0, 1): the uniform rate per layer, or the
fraction of all prunable channels cut in global mode. Kept cost falls as p grows; the search
stops as soon as the pruned model is within 1% (relative) of the goal. Widths are integers,
so in per-layer mode one uniform rate may jump over the goal; the search then continues from
the closest rate that keeps too much and cuts, in addition, the lowest-ranked remaining
channels of the whole model (normalised scores, as ``--global`` ranks them), bisecting how
many. The closest result is returned and the achieved figure is always reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .errors import SpecError
from .report import count_macs, count_params

TOLERANCE = 0.01  # relative
MAX_ITERATIONS = 40
P_MAX = 0.999  # a per-layer rate must stay below 1
P_RESOLUTION = 1e-5  # finer than one channel in any layer prunectl is meant for


@dataclass(frozen=True)
class Target:
    kind: str  # "macs" or "params"
    fraction: float  # of the original kept

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise SpecError(f"--target-{self.kind}: expected a fraction kept in (0, 1], got {self.fraction}")


def measure(model: nn.Module, example: torch.Tensor, kind: str) -> int:
    return count_macs(model, example) if kind == "macs" else count_params(model)


@dataclass
class SearchResult:
    value: object  # whatever ``evaluate`` produced for the chosen p
    p: float
    achieved: float  # fraction of the original kept
    iterations: int
    above: object = None  # the value of the largest p tried that still kept more than the goal

    def within(self, goal: float) -> bool:
        return abs(self.achieved - goal) <= TOLERANCE * goal


def search(evaluate: Callable[[float], tuple[object, float]], goal: float) -> SearchResult:
    """Bisect p so that ``evaluate(p)[1]`` (kept fraction, non-increasing in p) reaches ``goal``."""
    low, high = 0.0, P_MAX
    value, achieved = evaluate(low)
    best = SearchResult(value, low, achieved, 1, value)
    if achieved <= goal * (1 + TOLERANCE):
        return best
    above = value
    iteration = 1
    while iteration < MAX_ITERATIONS and high - low > P_RESOLUTION:
        iteration += 1
        p = high if iteration == 2 else (low + high) / 2
        value, achieved = evaluate(p)
        if abs(achieved - goal) < abs(best.achieved - goal):
            best = SearchResult(value, p, achieved, iteration)
        if abs(best.achieved - goal) <= TOLERANCE * goal:
            break
        if achieved > goal:
            if iteration == 2:
                break  # even the largest cut keeps too much: the closest is the best there is
            low, above = p, value
        else:
            high = p
    best.iterations, best.above = iteration, above
    return best
