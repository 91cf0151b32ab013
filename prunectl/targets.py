"""Targets: search the rate (or the global cut) until MACs or params reach a fraction kept.

``--target-macs 0.5`` keeps half of the original MACs (``torch.utils.flop_counter``, as in
the report). The search bisects one number p in [0, 1): the uniform rate per layer, or the
fraction of all prunable channels cut in global mode. Kept cost falls as p grows; the search
stops as soon as the pruned model is within 1% (relative) of the goal, and otherwise returns
the closest it found. The achieved figure is always reported.
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

    def within(self, goal: float) -> bool:
        return abs(self.achieved - goal) <= TOLERANCE * goal


def search(evaluate: Callable[[float], tuple[object, float]], goal: float) -> SearchResult:
    """Bisect p so that ``evaluate(p)[1]`` (kept fraction, non-increasing in p) reaches ``goal``."""
    low, high = 0.0, P_MAX
    value, achieved = evaluate(low)
    best = SearchResult(value, low, achieved, 1)
    if achieved <= goal * (1 + TOLERANCE):
        return best
    for iteration in range(2, MAX_ITERATIONS + 1):
        p = high if iteration == 2 else (low + high) / 2
        value, achieved = evaluate(p)
        if abs(achieved - goal) < abs(best.achieved - goal) or (
                abs(achieved - goal) == abs(best.achieved - goal) and p < best.p):
            best = SearchResult(value, p, achieved, iteration)
        best.iterations = iteration
        if best.within(goal):
            break
        if iteration == 2:
            if achieved > goal:
                break  # even the largest cut keeps too much: the closest is the best there is
            continue
        if achieved > goal:
            low = p
        else:
            high = p
    return best
