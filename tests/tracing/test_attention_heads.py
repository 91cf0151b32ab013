"""Attention heads written as reshapes (timm, transformers, hand-written): traced, cut whole, verified."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prunectl
from prunectl.coupling.groups import build_groups
from prunectl.errors import SpecError, UnsupportedError
from prunectl.formats.spec import Spec
from prunectl.tracing import trace_model
from tests.support.attention_models import ComputedShapeHeads, LinearToSequence, MixesChannels, SplitHeads, UnmetHeads

FACTORY = "tests.support.attention_models:"


def _prune(tmp_path: Path, model: torch.nn.Module, factory: str, shape: tuple[int, ...], **options):
    checkpoint = tmp_path / "model.pt"
    torch.save(model.state_dict(), checkpoint)
    return prunectl.prune(checkpoint, prunectl.PruneOptions(model=FACTORY + factory, input_shape=shape,
                                                            output=tmp_path / "out", onnx=True, **options))


@pytest.mark.parametrize("factory", ["TinyTimmViT", "TinyTimmViTEager"])
def test_timm_vit_cuts_whole_heads_of_its_fused_qkv(factory: str, tmp_path: Path) -> None:
    pytest.importorskip("timm")
    import tests.support.attention_models as models

    torch.manual_seed(0)
    model = getattr(models, factory)()
    spec = trace_model(model, (1, 3, 32, 32)).spec  # strict: scaled_dot_product_attention or q @ k^T, softmax, @ v
    layers = {layer.name: layer for layer in spec.layers}
    assert (layers["blocks.0.attn.qkv"].heads, layers["blocks.0.attn.qkv"].head_dim) == (3, 64)
    assert layers["blocks.0.attn.num_heads"].count and layers["blocks.0.attn.attn_dim"].count
    assert layers["blocks.0.attn.proj"].prev == ("blocks.0.attn.qkv",)
    result = _prune(tmp_path, model, factory, (1, 3, 32, 32), rate=0.5)
    pruned = prunectl.load(tmp_path / "out")
    attention = pruned.blocks[1].attn
    # 2 of 3 heads: q, k and v keep the same two heads of 64 rows each; the residual 192 -> 96
    assert attention.num_heads == 2 and attention.attn_dim == 128 and attention.head_dim == 64
    assert attention.qkv.weight.shape == (384, 96) and attention.proj.weight.shape == (96, 128)
    rows = result.manifest.kept["blocks.1.attn.qkv"]
    heads = sorted({row // 64 for row in rows if row < 192})
    assert rows == [part * 192 + head * 64 + i for part in range(3) for head in heads for i in range(64)]
    assert result.manifest.extra["verify"]["reference_max_abs"] > 0.01
    assert result.manifest.extra["onnx"]["max_abs"] <= 1e-4


@pytest.mark.parametrize("head_count", ["attribute", "inferred"])
def test_separate_q_k_v_share_their_heads_through_the_attention_product(head_count: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SplitHeads(head_count)
    traced = trace_model(model, (2, 5, 8))
    layers = {layer.name: layer for layer in traced.spec.layers}
    assert all((layers[name].heads, layers[name].head_dim) == (4, 6) for name in ("query", "key", "value"))
    assert set(layers["out"].prev) == {"query", "key", "value"}
    assert ("num_heads" in layers) == (head_count == "attribute")  # -1 needs no attribute entry
    heads = next(group for group in build_groups(traced.spec, model) if "query" in group.layers)
    assert heads.size == 4 and set(heads.layers) >= {"query", "key", "value"}
    factory = "SplitHeads" if head_count == "attribute" else "InferredHeads"
    result = _prune(tmp_path, model, factory, (2, 5, 8), rate=0.5, round_to=1)
    pruned = prunectl.load(tmp_path / "out")
    assert pruned.key.out_features == 12 and pruned.out.in_features == 12 and pruned.head_dim == 6
    assert pruned.num_heads == (2 if head_count == "attribute" else 4)  # -1: the attribute is never read
    assert result.manifest.extra["verify"]["reference_max_abs"] > 0


def test_a_head_count_written_in_the_code_pins_the_heads() -> None:
    with pytest.raises(UnsupportedError, match="head count fixed in the model's code"):
        trace_model(SplitHeads("literal"), (2, 5, 8))
    traced = trace_model(SplitHeads("literal"), (2, 5, 8), skip_unsupported=True)
    assert {"query", "key", "value"} <= set(traced.pinned)


def test_one_attribute_sizing_heads_that_never_meet_pins_them() -> None:
    with pytest.raises(UnsupportedError, match="never combined with the attribute num_heads"):
        trace_model(UnmetHeads(), (2, 5, 8))


def test_a_matmul_contracting_the_channels_is_refused() -> None:
    with pytest.raises(UnsupportedError, match="contracts the channel dim"):
        trace_model(MixesChannels(), (2, 5, 8))


def test_heads_in_a_spec_are_validated() -> None:
    layers = {"embed": {}, "query": {"heads": 4, "head_dim": 6}}

    def spec(entries: dict) -> Spec:
        return Spec.from_json({"prunectl_spec": 1, "input": {"shape": [2, 5, 8]}, "layers": entries})

    build_groups(spec(layers), SplitHeads())
    assert Spec.from_json(spec(layers).to_json()).to_json() == spec(layers).to_json()
    with pytest.raises(SpecError, match="heads and head_dim go together"):
        spec({"embed": {}, "query": {"heads": 4}})
    with pytest.raises(SpecError, match="positive integer"):
        spec({"embed": {}, "query": {"heads": 0, "head_dim": 4}})
    with pytest.raises(SpecError, match="whole number of parts"):
        build_groups(spec({"embed": {}, "query": {"heads": 5, "head_dim": 4}}), SplitHeads())
    with pytest.raises(SpecError, match="only a conv or linear layer entry has heads"):
        spec({"embed": {}, "num_heads": {"count": True, "heads": 4, "head_dim": 4}})


def test_a_linear_viewed_as_channels_for_a_conv_is_cut_in_whole_channels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    traced = trace_model(LinearToSequence(), (2, 8))
    layers = {layer.name: layer for layer in traced.spec.layers}
    assert (layers["fc"].heads, layers["fc"].head_dim) == (6, 5) and layers["channels"].count
    result = _prune(tmp_path, LinearToSequence(), "LinearToSequence", (2, 8), rate=0.5, round_to=1)
    pruned = prunectl.load(tmp_path / "out")
    assert pruned.channels == 3 and pruned.fc.out_features == 15 and pruned.conv.in_channels == 3
    assert result.manifest.extra["verify"]["reference_max_abs"] > 0


@pytest.mark.parametrize("criterion", ["apoz", "thinet"])
def test_data_driven_criteria_score_the_heads_of_a_fused_qkv(criterion: str, tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from tests.support.attention_models import TinyTimmViT

    torch.manual_seed(0)
    data = tmp_path / "data.pt"
    torch.save({"inputs": torch.randn(4, 3, 32, 32), "targets": torch.randint(0, 3, (4,))}, data)
    result = _prune(tmp_path, TinyTimmViT(), "TinyTimmViT", (1, 3, 32, 32), rate=0.5, criterion=criterion,
                    data=str(data))
    assert result.manifest.resize["blocks.0.attn.qkv"]["out_features"] == 384  # 2 of 3 heads, q/k/v alike


def test_a_computed_merge_shape_and_a_colliding_attribute_are_followed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    traced = trace_model(ComputedShapeHeads(), (2, 5, 8))  # strict
    layers = {layer.name: layer for layer in traced.spec.layers}
    assert layers["num_heads"].count and layers["all_head_size"].count and "layer_idx" not in layers
    _prune(tmp_path, ComputedShapeHeads(), "ComputedShapeHeads", (2, 5, 8), rate=0.5, round_to=1)
    pruned = prunectl.load(tmp_path / "out")
    assert (pruned.num_heads, pruned.all_head_size, pruned.layer_idx) == (2, 12, 4)


def test_a_per_head_bias_table_is_cut_with_its_heads(tmp_path: Path) -> None:
    from tests.support.trace_models import RelativeBiasAttention

    traced = trace_model(RelativeBiasAttention(), (1, 6, 3))
    layers = {layer.name: layer for layer in traced.spec.layers}
    # the table's columns are the heads (axis 1), found by running its gather on its own indices
    assert layers["relative_position_bias_table"].dim == 1 and "qkv" not in traced.pinned
    torch.manual_seed(0)
    torch.save(RelativeBiasAttention().state_dict(), tmp_path / "attn.pt")
    result = prunectl.prune(tmp_path / "attn.pt", prunectl.PruneOptions(
        model="tests.support.trace_models:RelativeBiasAttention", rate=0.5, round_to=1, input_shape=(1, 6, 3),
        output=tmp_path / "out", onnx=True))
    model = prunectl.load(tmp_path / "out")
    assert model.relative_position_bias_table.shape == (11, 2) and model.num_heads == 2
    assert result.manifest.to_json()["verify"]["soft_vs_hard_max_abs"] <= 1e-9
