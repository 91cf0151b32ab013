"""The exported file computes what the model computes: onnxruntime against torch on every input.

Both run in float32, with different kernels, so on real weights they differ by float32 rounding
that the network amplifies (the effect that made a float32 soft == hard check false-alarm,
precision.py). The bound is therefore the larger of ``atol * max(1, max|torch|)`` and
``NOISE_FACTOR`` times torch's own float32 error on that input (torch float32 against the same
model in float64): an exporter that is as exact as torch passes whatever the model, and an export
that computes something else is off by far more than ten times float32 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import VerificationError, first_line
from ..models.forward import flat_outputs, run
from .compare import compare
from .precision import float64_proof, proof_inputs

ONNX_ATOL = 1e-4
NOISE_FACTOR = 10


@dataclass(frozen=True)
class OnnxCheck:
    max_abs: float  # max |onnxruntime - torch float32| over every output and input
    max_ref: float  # max |torch float32|
    torch_float32_error: float  # max |torch float32 - torch float64|: the model's own rounding
    bound: float  # the largest difference allowed on the worst input

    def facts(self) -> dict[str, float]:
        return {"max_abs": self.max_abs, "bound": self.bound, "atol": ONNX_ATOL,
                "torch_float32_error": self.torch_float32_error, "noise_factor": NOISE_FACTOR}


def check_onnx(path: Path, model: nn.Module, inputs: list[torch.Tensor]) -> OnnxCheck:
    """Run the file in onnxruntime on every input and compare with torch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise VerificationError(f"{path}: onnxruntime cannot load it: {first_line(exc)}") from None
    worst = OnnxCheck(0.0, 0.0, 0.0, 0.0)
    for x in inputs:
        with torch.no_grad():
            expected = flat_outputs(model(x))
        noise = _float32_error(model, x, expected)
        try:
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        except Exception as exc:
            raise VerificationError(f"{path}: onnxruntime failed on input {tuple(x.shape)}: "
                                    f"{first_line(exc)}") from None
        result = compare(expected, [torch.from_numpy(g) for g in got], ONNX_ATOL, f"{path.name} vs torch")
        bound = max(ONNX_ATOL * max(1.0, result.max_ref), NOISE_FACTOR * noise)
        if not result.max_abs <= bound:
            raise VerificationError(f"{path}: onnxruntime output differs from torch: max |diff| = "
                                    f"{result.max_abs:.3g} > max({ONNX_ATOL:g} * max(1, {result.max_ref:.3g}), "
                                    f"{NOISE_FACTOR} * {noise:.3g} (torch's own float32 error))")
        if result.max_abs >= worst.max_abs:
            worst = OnnxCheck(result.max_abs, result.max_ref, max(noise, worst.torch_float32_error), bound)
        else:
            worst = OnnxCheck(worst.max_abs, worst.max_ref, max(noise, worst.torch_float32_error), worst.bound)
    return worst


def _float32_error(model: nn.Module, x: torch.Tensor, expected: list[torch.Tensor]) -> float:
    """max |torch float32 - torch float64| on ``x`` (0 when the model cannot run in float64: then
    ``atol`` alone bounds the export)."""
    try:
        with float64_proof(model):
            exact = run(model, proof_inputs([x])[0], "model (float64)")
    except VerificationError:
        return 0.0
    return compare(exact, expected, 0.0, "torch float32 vs float64").max_abs
