"""The proof of a depth cut: the original skipping the dropped layers computes what the smaller model does.

A skipped layer returns the hidden states it was given (what a residual block with both branches
silenced computes); the smaller model is cut/depth.py's, renumbered and with its config updated.
Both run in float64, on the proof inputs, within the bound every soft == hard check uses.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..cut.depth import DepthCut, Skipped
from ..errors import VerificationError
from ..models.forward import run
from .compare import compare
from .precision import PROOF_TOLERANCE, float64_proof, proof_inputs


def prove_drop(model: nn.Module, smaller: nn.Module, cut: DepthCut, inputs: list[torch.Tensor]) -> float:
    """max |original with the layers skipped - smaller model| in float64; VerificationError past the
    bound. The original skips them in place for the check (no third copy), then gets them back."""
    layers = model.get_submodule(cut.container)
    removed = {index: layers[index] for index in cut.dropped}
    worst = 0.0
    try:
        for index in cut.dropped:
            layers[index] = Skipped()
        with float64_proof(model), float64_proof(smaller):
            for x in proof_inputs(inputs):
                result = compare(run(model, x, "original with layers skipped"), run(smaller, x, "smaller model"),
                                 PROOF_TOLERANCE, "skipped vs dropped")
                if not result.ok:
                    raise VerificationError(
                        f"--drop-layers: the model without layers {list(cut.dropped)} computes something else "
                        f"than the original skipping them (max diff {result.max_abs:.3g})")
                worst = max(worst, result.max_abs)
    finally:
        for index, layer in removed.items():
            layers[index] = layer
    return worst


__all__ = ["prove_drop"]
