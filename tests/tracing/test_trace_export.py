"""The torch.export fallback: models torch.fx cannot trace get a spec from torch.export's graph."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import prunectl
from prunectl.errors import SpecError, UnsupportedError
from prunectl.tracing import trace_model
from prunectl.tracing.capture import fx_capture
from tests.support.export_models import DataBranchNet, FxGraphFailsNet, ShapeBranchNet, TinyDetector

ODD_INPUT = (1, 3, 9, 9)  # takes the padding branch


def test_fx_cannot_trace_the_fixture() -> None:
    with pytest.raises(UnsupportedError, match="torch.fx cannot trace"):
        fx_capture(ShapeBranchNet(), torch.randn(ODD_INPUT))


def test_export_graph_gives_the_same_layers_and_couplings_as_fx_would() -> None:
    traced = trace_model(ShapeBranchNet(), ODD_INPUT)
    assert traced.tracer == "torch.export"
    layers = {layer.name: layer for layer in traced.spec.layers}
    assert list(layers) == ["conv1", "bn1", "conv2", "bn2", "conv3", "head"]
    assert layers["conv2"].prev is None and layers["bn2"].prev is None
    assert layers["conv3"].prev == ("bn1", "bn2")  # the residual add couples both norms
    assert layers["head"].prev is None  # through the slice and the spatial mean
    assert traced.pinned == {"head": "its channels reach the model output"}


def test_export_traced_model_prunes_verifies_and_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ShapeBranchNet()
    checkpoint = tmp_path / "shape_branch.pt"
    torch.save(model.state_dict(), checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(
        model="tests.support.export_models:ShapeBranchNet", rate=0.5, round_to=1, input_shape=ODD_INPUT,
        output=tmp_path / "out", onnx=True))
    assert result.report["traced"]["tracer"] == "torch.export"
    widths = {layer["name"]: layer["after"] for layer in result.report["layers"]}
    assert widths == {"conv1": 4, "bn1": 4, "conv2": 4, "bn2": 4, "conv3": 6, "head": 5}
    assert result.manifest.extra["verify"]["soft_vs_hard_max_abs"] <= 1e-5
    assert result.manifest.extra["onnx"]["max_abs"] <= 1e-4
    reloaded = prunectl.load(tmp_path / "out")
    x = torch.randn(ODD_INPUT)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), result.model.eval()(x), atol=1e-5)


def test_a_model_whose_fx_graph_cannot_run_is_captured_by_torch_export() -> None:
    fx_capture(FxGraphFailsNet(), torch.randn(1, 3, 8, 8))  # fx traces it...
    traced = trace_model(FxGraphFailsNet(), (1, 3, 8, 8))  # ...but only torch.export's graph runs
    assert traced.tracer == "torch.export"
    assert [(layer.name, layer.prune) for layer in traced.spec.layers] == [("conv1", True), ("conv2", False)]


def test_a_wrong_input_shape_is_still_the_input_shape_error() -> None:
    with pytest.raises(UnsupportedError, match="check --input-shape"):
        trace_model(FxGraphFailsNet(), (1, 5, 8, 8))  # 5 channels into a 3-channel conv: neither runs


def test_a_model_neither_can_capture_is_exit_6_naming_both() -> None:
    with pytest.raises(UnsupportedError) as info:
        trace_model(DataBranchNet(), (1, 3, 8, 8))
    assert info.value.exit_code == 6
    assert "torch.fx cannot trace" in str(info.value) and "torch.export cannot capture" in str(info.value)


def test_timm_mobilevit_which_fx_cannot_trace_gets_its_spec_from_torch_export() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("mobilevit_xxs", pretrained=False)
    traced = trace_model(model, (1, 3, 64, 64), skip_unsupported=True)
    assert traced.tracer == "torch.export"
    prunable = [layer.name for layer in traced.spec.layers if layer.prune]
    assert "stem.conv" in prunable and "stages.0.0.conv1_1x1.conv" in prunable
    assert traced.pinned["head.fc"] == "its channels reach the model output"


def test_module_prunes_a_detector_backbone_and_verifies_it_alone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    checkpoint = tmp_path / "detector.pt"
    torch.save(TinyDetector().state_dict(), checkpoint)
    options = dict(model="tests.support.export_models:TinyDetector", rate=0.5, round_to=1, input_shape=(1, 3, 8, 8))
    with pytest.raises(UnsupportedError):  # the whole model cannot be traced
        prunectl.prune(checkpoint, prunectl.PruneOptions(**options))
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(**options, module="backbone", output=tmp_path / "out"))
    widths = {layer["name"]: layer["after"] for layer in result.report["layers"]}
    assert widths == {"backbone.0": 8, "backbone.1": 8, "backbone.3": 16, "backbone.4": 16}  # outputs kept whole
    assert result.report["module"] == "backbone" and result.manifest.extra["module"] == "backbone"
    assert result.report["traced"]["pinned"] == {"backbone.4": "its channels reach the model output"}
    assert result.manifest.kept["backbone.0"] and result.manifest.extra["verify"]["soft_vs_hard_max_abs"] <= 1e-5
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["module"] == "backbone"
    assert prunectl.verify(tmp_path / "out")["forward"] == "ok"
    reloaded = prunectl.load(tmp_path / "out")
    assert reloaded.backbone[3].in_channels == 8 and reloaded.head.in_channels == 16
    with pytest.raises(SpecError, match="'neck' is not a submodule of TinyDetector"):
        prunectl.prune(checkpoint, prunectl.PruneOptions(**options, module="neck"))
    with pytest.raises(SpecError, match="--module: --target-macs"):
        prunectl.prune(checkpoint, prunectl.PruneOptions(**{**options, "rate": None}, module="backbone",
                                                         target_macs=0.5))


def test_spec_module_writes_a_spec_that_prune_takes_back(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from prunectl.cli import cli

    torch.manual_seed(0)
    checkpoint = tmp_path / "detector.pt"
    torch.save(TinyDetector().state_dict(), checkpoint)
    spec_path = tmp_path / "spec.json"
    runner = CliRunner()
    written = runner.invoke(cli, ["spec", str(checkpoint), "--model", "tests.support.export_models:TinyDetector",
                                  "--module", "backbone", "--input-shape", "1,3,8,8", "-o", str(spec_path)])
    assert written.exit_code == 0, written.output
    data = json.loads(spec_path.read_text())
    assert data["module"] == "backbone" and list(data["layers"])[0] == "backbone.0"
    assert data["layers"]["backbone.4"]["prune"] is False  # the backbone's output
    pruned = runner.invoke(cli, ["prune", str(checkpoint), "--model", "tests.support.export_models:TinyDetector",
                                 "--spec", str(spec_path), "--rate", "0.5", "--round-to", "1", "-o",
                                 str(tmp_path / "out"), "--json"])
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.output)["manifest"]["module"] == "backbone"
