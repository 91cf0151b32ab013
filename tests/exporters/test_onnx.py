"""ONNX export: what it writes holds no path of the machine that made it."""
from __future__ import annotations

import onnx
import torch
from helpers import ROOT, machine_paths

from fixtures.make_checkpoints import make_model
from prunectl.exporters.onnx import _export_bytes, _strip_local_details


def test_dynamo_exporter_output_is_stripped_of_paths(tmp_path):
    """The fallback exporter records Python stack traces (with file paths) in node metadata;
    export_onnx strips them. Checked directly, since the fixtures take the TorchScript path."""
    model = make_model("dwsep")
    raw = _export_bytes(model, torch.randn(1, 3, 32, 32), 18, "dynamo", False, ["output"])
    assert str(ROOT).encode() in raw or b"site-packages" in raw  # the risk is real ...
    proto = onnx.load_from_string(raw)
    _strip_local_details(proto)
    data = proto.SerializeToString(deterministic=True)
    for needle in [*machine_paths(tmp_path), b"site-packages", b".py:"]:
        assert needle not in data  # ... and removed
