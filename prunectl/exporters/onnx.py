"""model.onnx: ``torch.onnx.export``, then ``onnx.checker`` (``verify/onnx_check.py`` runs it in
onnxruntime against torch).

The TorchScript-based exporter is tried first (10x faster than the dynamo one on CNNs, and
its output is byte-stable); the dynamo exporter is the fallback for what it cannot trace.
Doc strings and metadata are stripped so that no path of the user's machine ends up in
the file.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import UnsupportedError, first_line
from ..models.forward import run
from ..options import DEFAULT_OPSET


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int = DEFAULT_OPSET) -> dict:
    """Write the ONNX file; returns facts for the manifest (opset, exporter, dynamic batch)."""
    import onnx

    n_outputs = len(run(model, example, "model"))  # a model that can't run is a clear error, not an export crash
    output_names = ["output"] if n_outputs == 1 else [f"output_{i}" for i in range(n_outputs)]
    attempts = [("torchscript", True), ("torchscript", False), ("dynamo", False)]
    errors = []
    for exporter, dynamic_batch in attempts:
        try:
            data = _export_bytes(model, example, opset, exporter, dynamic_batch, output_names)
            proto = onnx.load_from_string(data)
            _strip_local_details(proto)
            onnx.checker.check_model(proto, full_check=True)
            path.write_bytes(proto.SerializeToString(deterministic=True))
            return {"opset": opset, "exporter": exporter, "dynamic_batch": dynamic_batch}
        except Exception as exc:  # the next exporter may succeed; report all if none does
            errors.append(f"{exporter}: {first_line(exc)}")
    raise UnsupportedError(f"ONNX export of {type(model).__name__} failed: " + " | ".join(errors))


def _export_bytes(model: nn.Module, example: torch.Tensor, opset: int, exporter: str,
                  dynamic_batch: bool, output_names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {name: {0: "batch"} for name in ["input", *output_names]} if dynamic_batch else None
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=output_names, dynamic_axes=axes,
                              do_constant_folding=True)
        else:
            import contextlib
            import os

            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                program = torch.onnx.export(model, (example,), dynamo=True, opset_version=max(opset, 18),
                                            input_names=["input"], output_names=output_names, verbose=False)
            return program.model_proto.SerializeToString()
    return buffer.getvalue()


def _strip_local_details(proto) -> None:
    proto.doc_string = ""
    del proto.metadata_props[:]
    for graph in [proto.graph, *[f for f in getattr(proto, "functions", [])]]:
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
