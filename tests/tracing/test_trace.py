"""Automatic specs: the tracer's graph rules, and torchvision models pruned with no spec at all."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner

import prunectl
from prunectl.cli import cli
from prunectl.coupling.groups import build_groups
from prunectl.errors import UnsupportedError
from prunectl.tracing import trace_model
from tests.support.trace_models import (
    ChannelCumsum,
    ConcatBlock,
    ReshapedLayerScale,
    SqueezeExcite,
    TwoBranchAdd,
    literal_layer_scale,
)

# A fast representative subset: residual adds, depthwise + squeeze-excitation multiplies,
# stochastic depth, grouped convs, LayerNorm + layer scale on the residual width (convnext); the
# whole list is measured by `make zoo` (docs/zoo.md).
TORCHVISION_MODELS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "convnext_tiny"]
SMALL_INPUT = (1, 3, 32, 32)


def _layers(spec) -> dict:
    return {layer.name: layer for layer in spec.layers}


def test_add_couples_both_addends_and_a_second_reader_of_the_input_gets_empty_prev() -> None:
    spec = trace_model(TwoBranchAdd(), (1, 3, 8, 8)).spec
    layers = _layers(spec)
    assert list(layers) == ["a", "b", "c", "fc"]
    assert layers["a"].prev is None  # the first layer reads the model input
    assert layers["b"].prev == ()  # reads the model input too, not the layer listed before it
    assert layers["c"].prev == ("a", "b")
    assert layers["fc"].prev is None and not layers["fc"].prune  # the classifier reaches the output
    groups = {tuple(g.layers): g for g in build_groups(spec, TwoBranchAdd())}
    assert ("a", "b") in groups
    fc_member = [m for m in groups[("c",)].members if m.module == "fc"][0]
    assert fc_member.factor == 16  # flatten of a 4x4 map: each channel spans 16 features


def test_squeeze_excitation_multiply_couples_the_scale_with_the_scaled_tensor() -> None:
    spec = trace_model(SqueezeExcite(), (1, 3, 8, 8)).spec
    layers = _layers(spec)
    assert layers["fc1"].prev is None  # bn, the layer listed just before it
    assert layers["project"].prev == ("bn", "fc2")
    group = [g for g in build_groups(spec, SqueezeExcite()) if "conv" in g.layers][0]
    assert set(group.layers) == {"conv", "bn", "fc2"}
    assert group.prunable


def test_concatenation_gives_a_cat_key_and_prunes_each_part_at_its_offset(tmp_path: Path) -> None:
    spec = trace_model(ConcatBlock(), (1, 3, 8, 8)).spec
    layers = _layers(spec)
    assert layers["norm"].cat == (("stem",), ("left",), ("right",))
    assert layers["mix"].prev is None and layers["mix"].cat is None  # reads the norm, listed just before
    torch.manual_seed(0)
    checkpoint = tmp_path / "concat.pt"
    torch.save(ConcatBlock().state_dict(), checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(
        model="tests.support.trace_models:ConcatBlock", rate=0.5, input_shape=(1, 3, 8, 8), output=tmp_path / "out"))
    widths = {layer["name"]: layer["after"] for layer in result.report["layers"]}
    assert widths["stem"] == 4 and widths["left"] == 3 and widths["right"] == 5
    assert widths["norm"] == 12  # 4 + 3 + 5: the norm follows every part
    assert prunectl.load(tmp_path / "out").mix.in_channels == 12


def test_unknown_op_on_pruned_channels_is_exit_6_naming_module_and_op() -> None:
    with pytest.raises(UnsupportedError) as info:
        trace_model(ChannelCumsum(), (1, 3, 8, 8))
    message = str(info.value)
    assert info.value.exit_code == 6
    assert "cumsum" in message and "'conv1'" in message and "--skip-unsupported" in message


def test_skip_unsupported_pins_the_channels_and_says_why() -> None:
    traced = trace_model(ChannelCumsum(), (1, 3, 8, 8), skip_unsupported=True)
    layers = _layers(traced.spec)
    assert not layers["conv1"].prune and "cumsum" in traced.pinned["conv1"]
    assert layers["conv2"].prev == ()  # its input comes out of the unsupported op: never cut
    assert layers["conv2"].prune  # conv2's own outputs stay prunable


def test_traced_spec_round_trips_through_json_and_the_parser(tmp_path: Path) -> None:
    spec = prunectl.derive_spec("torchvision:resnet18", SMALL_INPUT)
    path = tmp_path / "spec.json"
    prunectl.write_spec(spec, path)
    again = prunectl.read_spec(path)
    assert again.to_json() == spec.to_json()
    assert spec.model.factory == "torchvision:resnet18" and spec.input.shape == SMALL_INPUT


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_torchvision_model_pruned_without_a_spec(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    checkpoint = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(
        model=f"torchvision:{name}", rate=0.3, input_shape=SMALL_INPUT, output=tmp_path / "out", onnx=True))
    report = result.report
    assert report["params"]["after"] < report["params"]["before"]
    assert report["macs"]["after"] < report["macs"]["before"]
    assert result.manifest.extra["onnx"]["max_abs"] <= 1e-4
    assert report["traced"]["pinned"]  # at least the classifier
    # these models are designed at multiples of 8, so the traced spec keeps their pruned widths so
    assert result.manifest.extra["round_to"] == 8
    for name_, module in result.model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups == 1 and module.out_channels >= 8:
            assert module.out_channels % 8 == 0, name_
    reloaded = prunectl.load(tmp_path / "out")
    x = torch.randn(2, *SMALL_INPUT[1:])
    with torch.no_grad():
        assert torch.allclose(reloaded(x), result.model.eval()(x), atol=1e-5)


def test_traced_spec_rounds_to_8_only_for_models_designed_at_multiples_of_8() -> None:
    assert trace_model(torchvision.models.resnet18(), SMALL_INPUT).spec.round_to == 8
    # shufflenet's 58/116/232 widths are not; it keeps exact rates
    shufflenet = torchvision.models.shufflenet_v2_x1_0()
    assert trace_model(shufflenet, SMALL_INPUT, skip_unsupported=True).spec.round_to is None
    assert trace_model(TwoBranchAdd(), (1, 3, 8, 8)).spec.round_to == 8  # 16-wide layers


def test_cli_spec_then_prune_with_it_and_unsupported_model_exits_6(tmp_path: Path) -> None:
    runner = CliRunner()
    spec_path = tmp_path / "spec.json"
    result = runner.invoke(cli, ["spec", "--model", "torchvision:resnet18", "--input-shape", "1,3,32,32",
                                 "-o", str(spec_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(spec_path.read_text())["layers"]["fc"]["prune"] is False
    checkpoint = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), checkpoint)
    result = runner.invoke(cli, ["prune", str(checkpoint), "--spec", str(spec_path), "--rate", "0.3", "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["spec", "--model", "tests.support.trace_models:ChannelCumsum", "--input-shape",
                                 "1,3,8,8"])
    assert result.exit_code == 6
    assert "cumsum" in result.output and "conv1" in result.output


def test_timm_models_trace_with_their_norm_act_layers_kept_whole() -> None:
    pytest.importorskip("timm")
    # timm's BatchNormAct2d subclasses BatchNorm2d; traced through, F.batch_norm would hide it and
    # pin every squeeze-excitation block; kept as one node, only the classifier stays unpruned
    spec = prunectl.derive_spec("timm:efficientnet_b0", SMALL_INPUT)
    assert [layer.name for layer in spec.layers if not layer.prune] == ["classifier"]
    assert _layers(spec)["blocks.1.0.bn1"].prev is None


def test_thinet_reads_each_part_of_a_concatenation_at_its_offset(tmp_path: Path) -> None:
    from prunectl.coupling.groups import build_groups
    from prunectl.selection.scoring import layer_views

    model = ConcatBlock().eval()
    spec = trace_model(model, (1, 3, 8, 8)).spec
    views = layer_views(build_groups(spec, model), model)
    mix_readers = {view.name: [(c.offset, c.channels) for c in view.consumers if c.name == "mix"]
                   for view in views.values()}
    assert mix_readers["stem"] == [(0, 8)] and mix_readers["left"] == [(8, 6)] and mix_readers["right"] == [(14, 10)]
    torch.manual_seed(0)
    checkpoint, data = tmp_path / "concat.pt", tmp_path / "data.pt"
    torch.save(ConcatBlock().state_dict(), checkpoint)
    torch.save({"inputs": torch.randn(16, 3, 8, 8)}, data)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(
        model="tests.support.trace_models:ConcatBlock", rate=0.5, input_shape=(1, 3, 8, 8), criterion="thinet",
        data=str(data)))
    assert {layer["name"]: layer["after"] for layer in result.report["layers"]}["norm"] == 12


def test_a_reshaped_vector_parameter_follows_the_channels(tmp_path: Path) -> None:
    layers = {layer.name: layer for layer in trace_model(ReshapedLayerScale(), (1, 3, 8, 8)).spec.layers}
    assert layers["gamma"].dim == 0  # the vector's own axis, though the op saw it as dim 1
    torch.manual_seed(0)
    torch.save(ReshapedLayerScale().state_dict(), tmp_path / "ls.pt")
    result = prunectl.prune(tmp_path / "ls.pt", prunectl.PruneOptions(
        model="tests.support.trace_models:ReshapedLayerScale", rate=0.5, round_to=1, input_shape=(1, 3, 8, 8),
        output=tmp_path / "out", onnx=True))
    assert result.manifest.resize["gamma"] == {"dim_0": 4}
    assert prunectl.load(tmp_path / "out").gamma.shape == (4,)


def test_a_parameter_viewed_to_a_literal_channel_count_is_refused() -> None:
    with pytest.raises(UnsupportedError, match=r"fixed tensor of shape \(1, 8, 1, 1\)"):
        trace_model(literal_layer_scale(), (1, 3, 8, 8))


def _prune_exactly(tmp_path: Path, model_class: type, onnx: bool = True):
    """``model_class`` (from tests/support/trace_models.py) seeded, saved, pruned at 0.5 on 8x8
    inputs with its float64 proof exact, and its bundle reloaded: (result, rebuilt model); the
    rebuilt model computes what the returned one does, bit for bit."""
    torch.manual_seed(0)
    torch.save(model_class().state_dict(), tmp_path / "model.pt")
    result = prunectl.prune(tmp_path / "model.pt", prunectl.PruneOptions(
        model=f"tests.support.trace_models:{model_class.__name__}", rate=0.5, round_to=1, input_shape=(1, 3, 8, 8),
        output=tmp_path / "out", onnx=onnx))
    assert result.manifest.to_json()["verify"]["soft_vs_hard_max_abs"] < 1e-12  # float64 proof: exact
    rebuilt = prunectl.load(tmp_path / "out")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), result.model(x))
    return result, rebuilt


def test_a_layer_scale_viewed_to_a_shape_its_module_holds_follows_the_channels(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from tests.support.trace_models import HeldShapeLayerScale

    layers = _layers(trace_model(HeldShapeLayerScale(), (1, 3, 8, 8)).spec)  # strict: raises if refused
    assert layers["layer_scale.scale"].dim == 0 and layers["layer_scale.shape"].count
    result, rebuilt = _prune_exactly(tmp_path, HeldShapeLayerScale)
    assert result.manifest.resize["layer_scale"] == {"shape": 4}
    assert result.manifest.resize["layer_scale.scale"] == {"dim_0": 4}
    # a fresh timm Scale given the kept count
    assert rebuilt.layer_scale.shape == (4, 1, 1) and rebuilt.layer_scale.scale.shape == (4,)


def test_timm_rms_and_simple_norms_are_cut_with_their_statistic_over_the_kept_channels(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from tests.support.trace_models import TimmRmsNorms

    layers = _layers(trace_model(TimmRmsNorms(), (1, 3, 8, 8)).spec)  # strict: raises if refused
    assert {"rms2d", "simple2d", "rms", "simple"} <= set(layers)
    _, rebuilt = _prune_exactly(tmp_path, TimmRmsNorms)
    assert rebuilt.rms2d.weight.shape == (4,) and rebuilt.simple.normalized_shape == (4,)


def test_metaformer_layer_norms_without_bias_are_cut_over_the_kept_channels(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from tests.support.trace_models import NoBiasLayerNorms

    layers = _layers(trace_model(NoBiasLayerNorms(), (1, 3, 8, 8)).spec)  # strict: raises if refused
    assert {"norm2d", "norm"} <= set(layers)
    _, rebuilt = _prune_exactly(tmp_path, NoBiasLayerNorms, onnx=False)
    assert rebuilt.norm2d.normalized_shape == (4,) and rebuilt.norm.bias is None


def test_a_global_response_norm_is_cut_with_its_mean_over_the_kept_channels(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from tests.support.trace_models import ResponseNormMlp

    layers = _layers(trace_model(ResponseNormMlp(), (1, 3, 8, 8)).spec)  # strict: raises if refused
    assert layers["grn_nchw"].prev is None and layers["grn_nhwc"].prev is None  # each follows the layer before
    _, rebuilt = _prune_exactly(tmp_path, ResponseNormMlp)
    assert rebuilt.grn_nchw.weight.shape == (4,) and rebuilt.grn_nhwc.bias.shape == (4,)


def test_a_weight_standardised_conv_is_an_op_whose_channels_stay(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from tests.support.trace_models import StandardisedConvNet

    # cutting an input would change the standardisation of every kept weight of the filter
    with pytest.raises(UnsupportedError, match=r"std:conv2d \(conv2d\) is an operator"):
        trace_model(StandardisedConvNet(), (1, 3, 8, 8))
    torch.manual_seed(0)
    torch.save(StandardisedConvNet().state_dict(), tmp_path / "std.pt")
    prunectl.prune(tmp_path / "std.pt", prunectl.PruneOptions(
        model="tests.support.trace_models:StandardisedConvNet", rate=0.5, round_to=1, input_shape=(1, 3, 8, 8),
        output=tmp_path / "out", skip_unsupported=True))
    rebuilt = prunectl.load(tmp_path / "out")  # was: the hard model cut the weight, not gain (exit 4)
    assert rebuilt.std.weight.shape == (8, 8, 3, 3) and rebuilt.std.gain.shape == (8, 1, 1, 1)


def test_a_slice_keeping_every_channel_of_a_concatenation_is_followed(tmp_path: Path) -> None:
    from tests.support.trace_models import SlicedConcat, truncating_concat

    layers = {layer.name: layer for layer in trace_model(SlicedConcat(), (1, 3, 8, 8)).spec.layers}
    assert layers["head"].cat == (("primary",), ("cheap",))
    with pytest.raises(UnsupportedError, match="indexes the channel dim"):  # out < width: channels dropped
        trace_model(truncating_concat(), (1, 3, 8, 8))
    torch.manual_seed(0)
    torch.save(SlicedConcat().state_dict(), tmp_path / "ghost.pt")
    prunectl.prune(tmp_path / "ghost.pt", prunectl.PruneOptions(
        model="tests.support.trace_models:SlicedConcat", rate=0.5, round_to=1, input_shape=(1, 3, 8, 8),
        output=tmp_path / "out"))
    assert prunectl.load(tmp_path / "out").head.in_channels == 8


def test_a_chunked_output_whose_halves_meet_is_one_channel_space_cut_in_both(tmp_path: Path) -> None:
    from tests.support.trace_models import GatedHalves

    layers = {layer.name: layer for layer in trace_model(GatedHalves(), (2, 8)).spec.layers}
    assert layers["fc"].parts == 2 and layers["down"].prev is None
    torch.manual_seed(0)
    torch.save(GatedHalves().state_dict(), tmp_path / "gated.pt")
    result = prunectl.prune(tmp_path / "gated.pt", prunectl.PruneOptions(
        model="tests.support.trace_models:GatedHalves", rate=0.5, round_to=1, input_shape=(2, 8),
        output=tmp_path / "out"))
    kept = result.manifest.kept["fc"]
    assert len(kept) == 8 and kept[4:] == [index + 8 for index in kept[:4]]  # the same channels in both halves
    assert prunectl.load(tmp_path / "out").down.in_features == 4


def test_a_chunked_output_whose_halves_are_read_apart_keeps_its_channels() -> None:
    from tests.support.trace_models import HalvesReadApart

    with pytest.raises(UnsupportedError, match="fc \\(split\\) splits its outputs into parts that no listed layer "
                                               "reads together"):
        trace_model(HalvesReadApart(), (2, 8))
    traced = trace_model(HalvesReadApart(), (2, 8), skip_unsupported=True)
    assert not traced.spec.layer("fc").prune and traced.spec.layer("a").prev == ()
