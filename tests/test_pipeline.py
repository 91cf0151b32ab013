"""Every fixture model through the whole pipeline, as torchvision's test_models does for models."""
from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from helpers import FIXTURE_NAMES, SPECS

import prunectl
from prunectl.cli import cli
from prunectl.formats.spec import read_spec


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_prune_verify_reload_onnx(name: str, checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["prune", str(checkpoints[name]), "--spec", str(SPECS / f"{name}.json"),
                                      "-o", str(out), "--onnx", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    report, manifest = printed["report"], printed["manifest"]
    assert report["params"]["after"] < report["params"]["before"]
    assert report["macs"]["after"] < report["macs"]["before"]
    assert manifest["verify"]["soft_vs_hard_max_abs"] <= 1e-5 * max(1, manifest["verify"]["reference_max_abs"])
    assert manifest["onnx"]["max_abs"] <= 1e-4
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.pt",
                                                     "model.safetensors", "report.json"]

    # the bundle rebuilds without pickle and computes what the ONNX file computes
    model = prunectl.load(out)
    x = torch.randn(*manifest["input"]["shape"])
    with torch.no_grad():
        expected = model(x)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-4)
    assert sum(p.numel() for p in model.parameters()) == report["params"]["after"]

    # model.pt is a weights_only-loadable state_dict equal to the safetensors file
    state = torch.load(out / "model.pt", weights_only=True)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

    assert CliRunner().invoke(cli, ["verify", str(out)]).exit_code == 0


@pytest.mark.parametrize("name", ["resnet18", "conv1d"])
def test_soft_model_really_differs_from_original_and_matches_hard(name: str, checkpoints) -> None:
    """The soft model is a real masked copy: the check is not comparing a model with itself."""
    from prunectl.coupling.groups import build_groups
    from prunectl.criteria import get_criterion
    from prunectl.cut.hard import hard_prune
    from prunectl.cut.plan import make_plan
    from prunectl.cut.soft import soft_prune
    from prunectl.loading.checkpoint import load_checkpoint
    from prunectl.selection.per_layer import SelectOptions, select

    spec = read_spec(SPECS / f"{name}.json")
    model = load_checkpoint(checkpoints[name], spec.model).model
    groups = build_groups(spec, model)
    plan = make_plan(groups, select(groups, model, get_criterion("l1"), SelectOptions(rate=0.5)))
    soft, (hard, _) = soft_prune(model, plan), hard_prune(model, plan)
    x = torch.randn(*spec.input.shape)
    with torch.no_grad():
        original, masked, pruned = model(x), soft(x), hard(x)
    assert (original - masked).abs().max() > 1e-3
    assert (masked - pruned).abs().max() <= 1e-5 * max(1.0, float(masked.abs().max()))
    assert sum(p.numel() for p in hard.parameters()) < sum(p.numel() for p in soft.parameters())


def test_safetensors_and_dict_checkpoints(checkpoints, tmp_path: Path) -> None:
    spec = SPECS / "alexnet.json"
    from_pt = prunectl.prune(checkpoints["alexnet"], prunectl.PruneOptions(spec=spec))
    from_st = prunectl.prune(checkpoints["alexnet"].with_suffix(".safetensors"), prunectl.PruneOptions(spec=spec))
    assert from_pt.manifest.kept == from_st.manifest.kept
    # the {"state_dict", "model"} form carries its own factory: the bare CAC model_info suffices
    full = prunectl.prune(checkpoints["alexnet_full"],
                          prunectl.PruneOptions(spec=SPECS / "cac_alexnet_model_info.json", rate=0.5,
                                                input_shape=(1, 3, 32, 32)))
    assert full.manifest.rebuild["factory"] == "fixtures.models:AlexNet"
    assert full.manifest.rebuild["args"]["out_ch_conv1"] == 32


def test_cac_rebuild_args_are_n_args_channels(checkpoints) -> None:
    result = prunectl.prune(checkpoints["alexnet"], prunectl.PruneOptions(spec=SPECS / "alexnet.json"))
    args = result.manifest.rebuild["args"]
    assert args == {"num_classes": 10, "out_ch_conv1": 32, "out_ch_conv2": 135, "out_ch_conv3": 192,
                    "out_ch_conv4": 128, "out_ch_conv5": 128, "out_ch_fc1": 512, "out_ch_fc2": 512}
    assert result.manifest.resize == {}  # every width is a constructor argument


def test_surgery_records_resize_for_torchvision_models(tmp_path: Path) -> None:
    from helpers import prune_case

    layers = {"features.0": {}, "features.3": {}, "features.6": {}, "features.8": {}, "features.10": {},
              "classifier.1": {}, "classifier.4": {}, "classifier.6": {"arg": None}}
    result = prune_case(tmp_path, "torchvision:alexnet", layers, [1, 3, 64, 64], args={"num_classes": 10},
                        rate=0.5, output=tmp_path / "out", onnx=True)
    resize = result.manifest.resize
    assert resize["features.0"]["out_channels"] == 32 and resize["features.3"]["in_channels"] == 32
    assert resize["classifier.1"]["in_features"] == 128 * 36  # avgpool 6x6 then flatten
    reloaded = prunectl.load(tmp_path / "out")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reloaded(x), result.model(x))


def test_iterative_pruning_keeps_original_numbering(checkpoints, tmp_path: Path) -> None:
    spec = SPECS / "resnet18.json"
    first = prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(spec=spec, rate=0.5, output=tmp_path / "a"))
    second = prunectl.prune(tmp_path / "a", prunectl.PruneOptions(spec=spec, rate=0.5, output=tmp_path / "b"))
    assert second.model.conv1.out_channels == 4
    assert set(second.manifest.kept["conv1"]) <= set(first.manifest.kept["conv1"])
    assert second.manifest.extra["source"]["path"] == "a"
    assert prunectl.verify(tmp_path / "b")["checksums"] == "ok"


def test_export_adds_onnx_to_an_existing_bundle(checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "b"
    prunectl.prune(checkpoints["conv1d"], prunectl.PruneOptions(spec=SPECS / "conv1d.json", output=out))
    assert not (out / "model.onnx").exists()
    manifest = prunectl.export(out, onnx=True, opset=18)
    assert manifest.extra["onnx"]["opset"] == 18 and "model.onnx" in manifest.files
    assert json.loads((out / "manifest.json").read_text())["files"]["model.onnx"] == manifest.files["model.onnx"]
    assert prunectl.verify(out)["onnx_max_abs"] <= 1e-4


def test_info_on_checkpoint_and_bundle(checkpoints, tmp_path: Path) -> None:
    before = prunectl.info(checkpoints["vgg11_bn"], spec=SPECS / "vgg11_bn.json")
    prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(spec=SPECS / "vgg11_bn.json", output=tmp_path / "o"))
    after = prunectl.info(tmp_path / "o")
    assert after["params"] < before["params"] and after["macs"] < before["macs"]
    assert {layer["name"] for layer in before["layers"]} <= {layer["name"] for layer in after["layers"]}
