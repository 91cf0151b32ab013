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

from ..errors import SpecError
from ..layers import kinds as L
from ..measure.size import count_macs, count_params

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
    unreachable: bool = False  # even the largest cut keeps more than the goal

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
                best.unreachable = True  # even the largest cut keeps too much
                break
            low, above = p, value
        else:
            high = p
    best.iterations, best.above = iteration, above
    return best


class CostModel:
    """Fast MACs/params of ``model`` cut by a plan, without building the pruned model.

    A conv/linear layer's MACs (and a weight's size) scale with the fraction of output
    channels kept times the fraction of input channels kept (output only for depthwise
    convs); biases and norm parameters scale with the output fraction. Everything else is
    taken as constant. The base figures come from one exact count of ``model``, so for
    models made of these layers the estimate equals ``torch.utils.flop_counter``'s count;
    ``choose`` still checks the chosen plan with an exact count.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, kind: str, baseline: int) -> None:
        self.kind, self.baseline = kind, baseline
        self.modules = dict(model.named_modules())
        self.total = measure(model, example, kind)
        self.macs: dict[str, int] = {}
        if kind == "macs":
            handles = [module.register_forward_hook(self._recorder(name)) for name, module in self.modules.items()
                       if L.kind_of(module) in ("conv", "linear", "attention")]
            try:
                with torch.no_grad():
                    model(example)
            finally:
                for handle in handles:
                    handle.remove()

    def _recorder(self, name: str):
        def record(module: nn.Module, inputs, output) -> None:
            if L.kind_of(module) == "attention":
                tokens = output[0].numel() // module.out_proj.out_features
                self.macs[name] = self.macs.get(name, 0) + tokens * module.in_proj_weight.numel()
                if type(module) is nn.MultiheadAttention:  # its fused forward never calls out_proj
                    self.macs[f"{name}.out_proj"] = self.macs.get(f"{name}.out_proj", 0) + tokens * \
                        module.out_proj.weight.numel()
                return
            per_output = module.weight[0].numel() if L.kind_of(module) == "conv" else module.in_features
            counted = inputs[0] if L.is_transposed(module) else output
            self.macs[name] = self.macs.get(name, 0) + counted.numel() * per_output
        return record

    def __call__(self, plan: dict) -> float:
        delta = 0.0
        for name, cut in plan.items():
            if cut.count:
                continue  # an attribute holding the channel count: no weights
            if cut.axis is not None:  # a parameter entry (layer scale, position embedding): no MACs
                if self.kind != "macs":
                    parameter = self.modules[name.rpartition(".")[0]]._parameters[name.rpartition(".")[2]]
                    delta += parameter.numel() * (len(cut.out) / parameter.shape[cut.axis] - 1.0)
                continue
            module = self.modules[name]
            f_out = len(cut.out) / L.out_width(module) if cut.out is not None else 1.0
            f_in = len(cut.inp) / L.in_width(module) if cut.inp is not None else 1.0
            if L.is_depthwise(module) or L.kind_of(module) == "norm":
                f_in = 1.0
            if self.kind == "macs":
                base = self.macs.get(name, 0)
                delta += base * (f_out * f_in - 1.0)
                continue
            out_dims = L.out_dims(module)
            for tensor_name, parameter in module.named_parameters(recurse=False):
                scale = f_out if tensor_name in out_dims else 1.0
                if tensor_name == L.weight_name(module):
                    scale *= f_in
                delta += parameter.numel() * (scale - 1.0)
        return (self.total + delta) / self.baseline
