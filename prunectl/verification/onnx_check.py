"""The exported file computes what the model computes: onnxruntime against torch on every input."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import VerificationError, first_line
from ..models.forward import flat_outputs
from .compare import Comparison, compare

ONNX_ATOL = 1e-4


def check_onnx(path: Path, model: nn.Module, inputs: list[torch.Tensor], atol: float = ONNX_ATOL) -> Comparison:
    """Run the file in onnxruntime on every input and compare with torch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise VerificationError(f"{path}: onnxruntime cannot load it: {first_line(exc)}") from None
    worst = Comparison(0.0, 0.0, atol)
    for x in inputs:
        with torch.no_grad():
            expected = flat_outputs(model(x))
        try:
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        except Exception as exc:
            raise VerificationError(f"{path}: onnxruntime failed on input {tuple(x.shape)}: "
                                    f"{first_line(exc)}") from None
        result = compare(expected, [torch.from_numpy(g) for g in got], atol, f"{path.name} vs torch")
        if not result.ok:
            raise VerificationError(f"{path}: onnxruntime output differs from torch: max |diff| = "
                                    f"{result.max_abs:.3g} > {atol:g} * max(1, {result.max_ref:.3g})")
        if result.max_abs >= worst.max_abs:
            worst = result
    return worst
