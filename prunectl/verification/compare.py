"""The comparison every check uses: ``max|a - b| <= tolerance * max(1, max|a|)``, NaN a failure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from ..errors import VerificationError

TOLERANCE = {"float32": 1e-5, "float64": 1e-9, "float16": 1e-2, "bfloat16": 5e-2}


def tolerance_for(model: torch.nn.Module) -> float:
    """The relative bound for outputs computed in the model's own dtype (its first floating parameter's)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return TOLERANCE.get(str(dtype).removeprefix("torch."), TOLERANCE["float32"])


@dataclass(frozen=True)
class Comparison:
    max_abs: float
    max_ref: float
    tolerance: float
    # soft_vs_hard: multiply-accumulates of the hard and the soft model's forward pass on the
    # first input (the soft model has the original's shapes, so its count is the original's)
    hard_macs: int | None = field(default=None, compare=False)
    soft_macs: int | None = field(default=None, compare=False)
    precision: str = "float32"  # the dtype the compared models ran in (soft_vs_hard: float64)

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tolerance * max(1.0, self.max_ref)


def compare(reference: Iterable[torch.Tensor], candidate: Iterable[torch.Tensor], tolerance: float,
            what: str) -> Comparison:
    max_abs, max_ref = 0.0, 0.0
    for i, (a, b) in enumerate(zip(reference, candidate, strict=True)):
        if a.shape != b.shape:
            raise VerificationError(f"{what}: output {i} has shape {tuple(b.shape)}, expected {tuple(a.shape)} "
                                    "(a layer feeding the model output was pruned: mark it arg: null or prune: false)")
        a64, b64 = a.detach().double(), b.detach().double()
        if a64.numel():
            diff = float((a64 - b64).abs().max())
            # NaN would slip through max() and <=: a NaN anywhere is an infinite difference
            max_abs = max(max_abs, float("inf") if diff != diff else diff)
            max_ref = max(max_ref, float(a64.abs().max()))
    return Comparison(max_abs, max_ref, tolerance)
