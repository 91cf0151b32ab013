"""What goes into a bundle directory: weights, report, ONNX, and the manifest that seals them.

``prune``, ``export``, ``auto`` and ``finetune`` all write bundles through here, inside
``staging.staged_directory`` (atomic: the directory appears complete or not at all).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..exporters.onnx import export_onnx
from ..exporters.weights import portable_state_dict, write_pt, write_safetensors
from ..formats.checksums import file_sha256
from ..formats.manifest import HF_DIR, Manifest, write_manifest
from ..formats.strict_json import dump_json
from ..loading.bundle import bundle_dtype
from ..models.dtype import weights_dtype
from ..verification.onnx_check import check_onnx
from ..version import __version__
from .hf_folder import write_hf_folder
from .staging import staged_directory


def versions() -> dict[str, str]:
    return {"prunectl": __version__, "torch": torch.__version__, "onnx": _version_of("onnx"),
            "onnxruntime": _version_of("onnxruntime"), "safetensors": _version_of("safetensors")}


def _version_of(package: str) -> str:
    """The installed version from the package metadata: importing onnx and onnxruntime only to
    read ``__version__`` costs more than a small model's whole pruning run (~0.07 s)."""
    from importlib import import_module
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # installed under another distribution name (onnxruntime-gpu)
        return import_module(package).__version__


def write_bundle(out: Path, model: nn.Module, manifest: Manifest, report: dict, inputs: list[torch.Tensor],
                 opset: int | None, extra_files: dict[str, bytes] | None = None,
                 hf_companions: Path | None = None) -> Manifest:
    """Write the bundle directory atomically; ``extra_files`` (name -> bytes, e.g. an ``auto``
    run's history.json) are checksummed in the manifest like the model files. A transformers
    model also gets ``hf/`` (hf_folder.py), with the tokenizer files of ``hf_companions``."""
    with staged_directory(out) as staging:
        state_dict = portable_state_dict(model)
        write_safetensors(state_dict, staging / "model.safetensors")
        write_pt(state_dict, staging / "model.pt")
        (staging / "report.json").write_bytes(dump_json(report))
        for name, data in (extra_files or {}).items():
            (staging / name).write_bytes(data)
        extra = dict(manifest.extra)
        with weights_dtype(bundle_dtype(manifest)):  # the stock model checked is built as prunectl.load builds it
            hf = write_hf_folder(staging, model, manifest.rebuild, inputs[0], hf_companions)
        if hf is not None:
            extra[HF_DIR] = hf
        if opset is not None:
            extra["onnx"] = add_onnx(staging, model, inputs, opset)
        manifest = sealed(staging, manifest, extra)
        write_manifest(manifest, staging)
    return manifest


def add_onnx(directory: Path, model: nn.Module, inputs: list[torch.Tensor], opset: int) -> dict[str, Any]:
    """Export ``model.onnx`` into ``directory`` and check it against the model: the manifest's facts."""
    path = directory / "model.onnx"
    facts = export_onnx(model, inputs[0], path, opset)
    return {**facts, **check_onnx(path, model, inputs).facts()}


def sealed(staging: Path, manifest: Manifest, extra: dict[str, Any]) -> Manifest:
    """``manifest`` with the checksums of every file now in ``staging`` and the given extra facts."""
    files = {path.relative_to(staging).as_posix(): file_sha256(path)
             for path in sorted(staging.rglob("*")) if path.is_file()}
    return Manifest(manifest.rebuild, manifest.resize, manifest.kept, manifest.input, files, manifest.versions, extra)
