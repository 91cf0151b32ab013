"""Layer kinds beyond conv/linear/BatchNorm: LayerNorm, GroupNorm, PReLU, Embedding and parameters
whose channel axis follows a layer (layer scale, position embedding); soft == hard stays exact."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

import prunectl
from prunectl.coupling.groups import build_groups
from prunectl.errors import SpecError, UnsupportedError
from prunectl.formats.spec import Spec
from prunectl.layers.attention import ResidualCutMultiheadAttention
from prunectl.layers.resize import apply_resize
from prunectl.tracing import trace_model
from tests.support.layer_kind_models import (
    AttributeWidthView,
    ComputedWidthView,
    CrossAttention,
    CustomNormNet,
    FixedWidthView,
    HeadsFromInputWidth,
    NormZoo,
    ScaleUsedTwice,
    SpatialLayerNorm,
    TinyEncoder,
    TokenModel,
)

FACTORY = "tests.support.layer_kind_models:"


def _prune(tmp_path: Path, model: nn.Module, name: str, shape: tuple[int, ...], **options):
    checkpoint = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), checkpoint)
    return prunectl.prune(checkpoint, prunectl.PruneOptions(model=FACTORY + name, input_shape=shape,
                                                            output=tmp_path / "out", **options))


def test_norm_zoo_traced_pruned_and_rebuilt(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = trace_model(NormZoo(), (1, 3, 6, 6)).spec
    layers = {layer.name: layer for layer in spec.layers}
    assert layers["layer_scale"].dim == 0 and layers["ln2d"].prev == ("act", "gn_per_channel")
    assert "shared_act" not in layers  # PReLU with one slope is channel-free
    result = _prune(tmp_path, NormZoo(), "NormZoo", (1, 3, 6, 6), rate=0.5, onnx=True)
    model = prunectl.load(tmp_path / "out")
    assert model.gn.num_channels == 8 and model.gn.num_groups == 4  # groups kept, two channels each
    assert model.gn_per_channel.num_groups == model.gn_per_channel.num_channels == 8
    assert model.act.num_parameters == 8 and model.ln2d.normalized_shape == (8,)
    assert model.layer_scale.shape == (8, 1, 1) and model.ln.weight.shape == (8,)
    assert result.manifest.resize["layer_scale"] == {"dim_0": 8}
    assert result.manifest.extra["onnx"]["max_abs"] <= 1e-4
    kept = result.manifest.kept["stem"]
    assert [sum(1 for i in kept if i // 4 == g) for g in range(4)] == [2, 2, 2, 2]


def test_convnext_residual_width_is_no_longer_pinned() -> None:
    traced = trace_model(torchvision.models.convnext_tiny(), (1, 3, 32, 32))
    assert list(traced.pinned) == ["classifier.2"]  # only the classifier's output
    layers = {layer.name: layer for layer in traced.spec.layers}
    assert layers["features.1.0.layer_scale"].dim == 0 and layers["features.0.1"].prune
    groups = build_groups(traced.spec, torchvision.models.convnext_tiny())
    stage1 = [group for group in groups if "features.0.0" in group.layers][0]
    assert stage1.prunable and "features.1.2.layer_scale" in stage1.layers


def test_embedding_class_token_and_position_embedding_follow_the_embedding_dim(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = trace_model(TokenModel(), (2, 6), dtype="int64").spec
    dims = {layer.name: layer.dim for layer in spec.layers}
    assert dims["pos_embedding"] == 2 and dims["class_token"] == 2
    path = tmp_path / "spec.json"
    prunectl.write_spec(spec, path)
    checkpoint = tmp_path / "tokens.pt"
    torch.save(TokenModel().state_dict(), checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(spec=path, model=FACTORY + "TokenModel", rate=0.5,
                                                              output=tmp_path / "out", onnx=True))
    model = prunectl.load(tmp_path / "out")
    assert model.embed.weight.shape == (32, 6) and model.pos_embedding.shape == (1, 7, 6)
    assert model.class_token.shape == (1, 1, 6)
    assert model.norm.normalized_shape == (6,) and model.fc.in_features == 6
    assert result.report["params"]["after"] < result.report["params"]["before"]


@pytest.mark.parametrize("model, shape, words", [
    (CustomNormNet, (1, 8), ["layer_norm", "'fc1'"]),
    (SpatialLayerNorm, (1, 3, 6, 6), ["LayerNorm over 3 dims", "'conv'"]),
    (ScaleUsedTwice, (1, 3, 4, 4), ["parameter scale", "also used elsewhere"]),
    (CrossAttention, (2, 5, 8), ["MultiheadAttention", "cross-attention"]),
    (HeadsFromInputWidth, (2, 5, 8), ["uses the number of pruned channels", "'norm'"]),
    (FixedWidthView, (1, 3, 4, 4), ["channel count fixed in the model's code", "'conv'"]),
])
def test_what_cannot_be_cut_stays_exit_6(model, shape, words) -> None:
    with pytest.raises(UnsupportedError) as info:
        trace_model(model(), shape)
    assert info.value.exit_code == 6
    traced = trace_model(model(), shape, skip_unsupported=True)  # pinned instead, with the reason
    # the error names the first such op; every one is in the incidents, with the layers it pins
    told = str(info.value) + " ".join(f"{i.describe()} {sorted(i.sources)}" for i in traced.incidents)
    assert all(word in told for word in words), told
    assert traced.pinned


def _spec(layers: dict) -> Spec:
    return Spec.from_json({"prunectl_spec": 1, "layers": layers}, source="s.json")


def test_parameter_entries_are_strict_and_round_trip() -> None:
    layers = {"stem": {}, "gn": {}, "act": {}, "branch": {}, "gn_per_channel": {},
              "layer_scale": {"dim": 0}, "ln2d": {"prev": ["act", "gn_per_channel"]}}
    spec = _spec(layers)
    assert Spec.from_json(spec.to_json()).to_json() == spec.to_json()
    assert spec.layer("layer_scale").dim == 0
    build_groups(spec, NormZoo())
    model = NormZoo()
    bad = {
        "layer_scale": ({"prev": ["gn_per_channel"]}, SpecError, "dim: missing"),
        "branch": ({"dim": 0}, SpecError, "only a parameter entry"),
        "nothing_here": ({"dim": 0}, SpecError, "no module of that name .*, nor a parameter"),
    }
    for name, (options, error, words) in bad.items():
        broken = {key: ({} if key == name else value) for key, value in layers.items()}
        broken.pop("nothing_here", None)
        broken[name] = options
        with pytest.raises(error, match=words):
            build_groups(_spec(broken), model)
    with pytest.raises(SpecError, match="dim"):
        _spec({"stem": {}, "layer_scale": {"dim": 0, "arg": "width"}})
    with pytest.raises(SpecError, match="dim"):
        _spec({"stem": {}, "layer_scale": {"dim": -1}})
    with pytest.raises(SpecError, match="has shape"):
        build_groups(_spec({**layers, "layer_scale": {"dim": 3}}), model)


def test_resize_of_a_parameter_names_the_axis() -> None:
    model = NormZoo()
    apply_resize(model, {"layer_scale": {"dim_0": 5}, "ln": {"normalized_shape": 5}})
    assert model.layer_scale.shape == (5, 1, 1) and model.ln.weight.shape == (5,)
    with pytest.raises(SpecError, match="dim_3"):
        apply_resize(model, {"layer_scale": {"dim_3": 2}})
    with pytest.raises(SpecError, match="num_groups"):
        apply_resize(model, {"gn": {"num_channels": 6}})  # 6 channels in 4 groups


@pytest.mark.parametrize("name", ["TinyEncoder", "SeqFirstEncoder"])
def test_self_attention_cuts_whole_heads_and_the_residual_width(name: str, tmp_path: Path) -> None:
    import tests.support.layer_kind_models as models

    torch.manual_seed(0)
    spec = trace_model(getattr(models, name)(), (2, 5, 8)).spec
    layers = {layer.name: layer for layer in spec.layers}
    assert layers["attn"].prev == ("embed",) or layers["attn"].prev is None
    assert layers["attn.out_proj"].prev is None  # it reads the heads, listed right before it
    assert layers["ln_2"].prev == ("embed", "attn.out_proj")
    result = _prune(tmp_path, getattr(models, name)(), name, (2, 5, 8), rate=0.5, onnx=True)
    model = prunectl.load(tmp_path / "out")
    # 2 of 4 heads of head_dim 4 kept: q, k and v rows 8 each; the residual stream 16 -> 8
    assert model.attn.num_heads == 2 and model.attn.embed_dim == 8 and model.attn.head_dim == 4
    assert model.attn.in_proj_weight.shape == (24, 8) and model.attn.out_proj.weight.shape == (8, 8)
    assert result.manifest.resize["attn"] == {"embed_dim": 8, "num_heads": 2, "kdim": 8, "vdim": 8}
    kept_rows = result.manifest.kept["attn"]
    heads = sorted({row // 4 for row in kept_rows if row < 16})
    assert len(heads) == 2 and kept_rows == [block * 16 + head * 4 + i for block in range(3)
                                             for head in heads for i in range(4)]
    assert result.manifest.extra["verify"]["reference_max_abs"] > 0
    assert result.manifest.extra["onnx"]["max_abs"] <= 1e-4


def test_attention_heads_follow_the_criterion_and_pin_with_prune_false(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyEncoder()
    with torch.no_grad():  # heads 1 and 2 carry large q/k/v weights: l1 keeps them
        model.attn.in_proj_weight.view(3, 4, 4, 16)[:, 1:3] *= 10
    spec = trace_model(model, (2, 5, 8)).spec
    groups = build_groups(spec, model)
    heads = next(group for group in groups if group.layers == ["attn"])
    assert heads.size == 4 and heads.unit == 4 and heads.prunable
    result = _prune(tmp_path, model, "TinyEncoder", (2, 5, 8), rate=0.5, round_to=8)
    assert sorted({row // 4 for row in result.manifest.kept["attn"] if row < 16}) == [1, 2]  # 8 rows: round_to met
    layers = {layer.name: {} for layer in spec.layers}
    layers.update({"attn": {"prune": False}, "head": {"prune": False}})
    pinned = build_groups(_spec(layers), model)
    assert not next(group for group in pinned if group.layers == ["attn"]).prunable


def test_only_its_out_proj_reads_an_attentions_heads() -> None:
    base = {"embed": {}, "ln_1": {}, "attn": {}}
    with pytest.raises(SpecError, match="only attn.out_proj reads them"):
        build_groups(_spec({**base, "mlp1": {}}), TinyEncoder())
    with pytest.raises(SpecError, match="its out_proj reads its heads"):
        build_groups(_spec({**base, "attn.out_proj": {"prev": []}}), TinyEncoder())
    build_groups(_spec({**base, "attn.out_proj": {}}), TinyEncoder())


def test_a_pruned_attention_prunes_again_in_original_numbering(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _prune(tmp_path, TinyEncoder(), "TinyEncoder", (2, 5, 8), rate=0.25, round_to=1)  # 4 -> 3 heads
    second = prunectl.prune(tmp_path / "out", prunectl.PruneOptions(rate=0.5, round_to=1, output=tmp_path / "b"))
    assert isinstance(second.model.attn, ResidualCutMultiheadAttention)  # 2 heads (8) read a stream of 6
    third = prunectl.prune(tmp_path / "b", prunectl.PruneOptions(rate=0.5, round_to=1, output=tmp_path / "c"))
    assert third.model.attn.num_heads == 1 and third.model.attn.head_dim == 4
    assert set(third.manifest.kept["attn"]) < set(second.manifest.kept["attn"])  # the original rows
    assert prunectl.verify(tmp_path / "c")["rebuild"] == "ok"


@pytest.mark.parametrize("name", ["TorchEncoder", "TorchPreNormEncoder"])
def test_torch_transformer_encoder_prunes_heads_stream_and_ffn(name: str, tmp_path: Path) -> None:
    import tests.support.layer_kind_models as models

    torch.manual_seed(0)
    result = _prune(tmp_path, getattr(models, name)(), name, (2, 5, 8), rate=0.3, round_to=1, onnx=True)
    model = prunectl.load(tmp_path / "out").eval()
    attention = model.encoder.layers[0].self_attn
    assert attention.num_heads == 6 and attention.in_proj_weight.shape == (72, 23)  # 8 -> 6 heads, 32 -> 23
    assert isinstance(attention, ResidualCutMultiheadAttention) and not attention._qkv_same_embed_dim
    x = torch.randn(2, 5, 8)
    with torch.no_grad():  # the layer's fused eval path must not take a cut attention (it reads in_proj itself)
        fused = model(x)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            unfused = model(x)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    assert torch.allclose(fused, unfused, atol=1e-6)
    assert result.manifest.extra["onnx"]["max_abs"] <= 1e-4


def test_attention_resize_keeps_whole_heads() -> None:
    attention = nn.MultiheadAttention(16, 4, batch_first=True)
    apply_resize_model = nn.Sequential(attention)
    apply_resize(apply_resize_model, {"0": {"embed_dim": 8, "num_heads": 2, "kdim": 12, "vdim": 12}})
    assert attention.in_proj_weight.shape == (24, 12) and attention.head_dim == 4
    assert isinstance(attention, ResidualCutMultiheadAttention)
    with pytest.raises(SpecError, match="whole heads"):
        apply_resize(nn.Sequential(nn.MultiheadAttention(16, 4)), {"0": {"embed_dim": 10, "num_heads": 4}})


def test_out_proj_of_an_unlisted_attention_must_have_a_fixed_input() -> None:
    # specs written before heads were prunable: the residual columns as a parameter entry
    layers = {"embed": {}, "ln_1": {}, "attn.in_proj_weight": {"dim": 1}, "attn.out_proj": {}}
    with pytest.raises(SpecError, match="out_proj of a MultiheadAttention"):
        build_groups(_spec(layers), TinyEncoder())
    build_groups(_spec({**layers, "attn.out_proj": {"prev": []}}), TinyEncoder())


def test_a_reshape_sized_by_the_tensors_own_channel_count_is_followed() -> None:
    traced = trace_model(ComputedWidthView(), (1, 3, 4, 4))
    assert {layer.name: layer.prune for layer in traced.spec.layers}["conv"]


def test_an_int_attribute_holding_the_width_is_an_attribute_entry(tmp_path: Path) -> None:
    # torchvision's ViT reshapes its patch embedding with self.hidden_dim: the rebuild sets it smaller
    spec = trace_model(AttributeWidthView(), (1, 3, 4, 4)).spec
    assert {layer.name: layer.count for layer in spec.layers}["width"] is True
    assert Spec.from_json(spec.to_json()).to_json() == spec.to_json()
    torch.manual_seed(0)
    result = _prune(tmp_path, AttributeWidthView(), "AttributeWidthView", (1, 3, 4, 4), rate=0.5, round_to=1,
                    onnx=True)
    assert result.manifest.resize[""] == {"width": 4}
    model = prunectl.load(tmp_path / "out")
    assert model.width == 4 and model.conv.out_channels == 4
    with pytest.raises(SpecError, match="count"):
        build_groups(_spec({"conv": {}, "width": {}}), AttributeWidthView())  # the marker is required
    with pytest.raises(SpecError, match="count"):
        _spec({"conv": {}, "width": {"count": True, "dim": 0}})
    with pytest.raises(SpecError, match="no attribute 'training' holding a count"):
        apply_resize(AttributeWidthView(), {"": {"training": 1}})


def test_torchvision_vit_residual_width_and_heads_are_cut(tmp_path: Path) -> None:
    from tests.support.layer_kind_models import TinyViT

    torch.manual_seed(0)
    traced = trace_model(TinyViT(), (1, 3, 32, 32))
    assert list(traced.pinned) == ["heads.head"]
    result = _prune(tmp_path, TinyViT(), "TinyViT", (1, 3, 32, 32), rate=0.5, onnx=True)
    model = prunectl.load(tmp_path / "out")
    assert model.hidden_dim == 8 and model.conv_proj.out_channels == 8
    assert model.class_token.shape == (1, 1, 8) and model.encoder.pos_embedding.shape == (1, 17, 8)
    attention = model.encoder.layers[1].self_attention
    assert attention.num_heads == 1 and attention.embed_dim == 8 and attention.head_dim == 8  # 1 of 2 heads
    assert result.manifest.extra["verify"]["reference_max_abs"] > 0
    assert result.manifest.extra["onnx"]["max_abs"] <= 1e-4
