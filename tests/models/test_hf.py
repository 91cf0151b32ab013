"""hf:CLASS_OR_CONFIG models (transformers, built from a config, never downloaded) and BERT's FFN prune."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

import prunectl
from prunectl import registry
from prunectl.coupling.groups import build_groups
from prunectl.errors import SpecError
from prunectl.models import factory as factories
from prunectl.tracing import trace_model

transformers = pytest.importorskip("transformers")

BERT_ARGS = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
             "vocab_size": 100, "max_position_embeddings": 64}


@pytest.fixture(scope="module", autouse=True)
def hf_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The ``hf`` entry point, as pip registers it, for an editable install made before it existed
    (a no-op once prunectl is reinstalled)."""
    if registry.is_registered(registry.MODELS, "hf"):
        yield
        return
    site = tmp_path_factory.mktemp("site")
    info = site / "prunectl_hf_provider-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: prunectl-hf-provider\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[prunectl.models]\nhf = prunectl.models.hf_provider:hf_factory\n")
    sys.path.insert(0, str(site))
    registry.refresh()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        registry.refresh()


def test_class_config_and_model_type_names_build_the_same_model_from_args() -> None:
    for name in ("hf:BertModel", "hf:BertConfig", "hf:bert"):
        model = factories.build(name, BERT_ARGS)
        assert type(model).__name__ == "BertModel", name
        assert model.encoder.layer[0].intermediate.dense.out_features == 128
        assert len(model.encoder.layer) == 2
    head = factories.build("hf:BertForSequenceClassification", {**BERT_ARGS, "num_labels": 3})
    assert head.classifier.out_features == 3


@pytest.mark.parametrize("name", ["bert-base-uncased", "google/vit-base-patch16-224", "os", "PreTrainedModel",
                                  "_internal", "logging"])
def test_hub_names_and_non_model_names_are_refused_without_downloading(name: str) -> None:
    with pytest.raises(SpecError) as info:
        factories.build(f"hf:{name}", {})
    assert info.value.exit_code == 3 and "never" in str(info.value)


def test_a_field_close_to_a_real_one_is_an_error_naming_it() -> None:
    with pytest.raises(SpecError, match="'hidden_szie' is not a field of BertConfig; did you mean 'hidden_size'"):
        factories.build("hf:BertModel", {"hidden_szie": 64})
    with pytest.raises(SpecError, match="trust_remote_code"):
        factories.build("hf:bert", {"trust_remote_code": True})
    with pytest.raises(SpecError, match="'model_type' is 'gpt2', but BertConfig is 'bert'"):
        factories.build("hf:BertModel", {**BERT_ARGS, "model_type": "gpt2"})


def test_a_config_json_from_another_transformers_release_builds_like_from_pretrained() -> None:
    # all-MiniLM-L6-v2's config.json (transformers 4.8): metadata keys and a field 5.x dropped
    config_json = {**BERT_ARGS, "_name_or_path": "nreimers/MiniLM-L6-H384-uncased", "architectures": ["BertModel"],
                   "model_type": "bert", "transformers_version": "4.8.2", "position_embedding_type": "absolute"}
    with pytest.warns(UserWarning, match="'position_embedding_type' not a field of BertConfig"):
        model = factories.build("hf:BertModel", config_json)
    assert model.config.position_embedding_type == "absolute"
    assert model.config.hidden_size == BERT_ARGS["hidden_size"]


def test_the_config_json_of_a_model_read_from_a_gguf_builds() -> None:
    # save_pretrained after from_pretrained(gguf_file=...) writes the GGUF's general.name as
    # _model_name_or_path (SmolLM2's: "Smollm2 135M 8k Lc100K Mix1 Ep2"); it was exit 3, not a field
    config_json = {**BERT_ARGS, "_model_name_or_path": "Smollm2 135M 8k Lc100K Mix1 Ep2",
                   "architectures": ["BertModel"], "model_type": "bert", "transformers_version": "5.24.0"}
    model = factories.build("hf:BertModel", config_json)
    assert model.config.hidden_size == BERT_ARGS["hidden_size"]


def test_without_transformers_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # what `import transformers` sees when absent
    with pytest.raises(SpecError) as info:
        factories.build("hf:BertModel", BERT_ARGS)
    assert info.value.exit_code == 3 and "prunectl[hf]" in str(info.value)


def test_bert_traces_with_torch_export_its_heads_and_ffn_are_prunable() -> None:
    model = factories.build("hf:BertModel", BERT_ARGS)
    traced = trace_model(model, (1, 16), dtype="int64")  # strict: nothing it cannot follow
    assert traced.tracer == "torch.export"  # transformers 5 has no fx tracer
    layers = {layer.name: layer for layer in traced.spec.layers}
    # q, k and v are each viewed as (B, L, -1, head_size): their outputs are 4 heads of 16, merged
    # by the attention product and read by attention.output.dense (transformers 5 reads no head count
    # attribute there: the -1 follows the kept heads)
    for part in ("query", "key", "value"):
        assert (layers[f"encoder.layer.0.attention.self.{part}"].heads,
                layers[f"encoder.layer.0.attention.self.{part}"].head_dim) == (4, 16)
    assert not any(layer.count for layer in traced.spec.layers)
    assert set(layers["encoder.layer.0.attention.output.dense"].prev) == {
        f"encoder.layer.0.attention.self.{part}" for part in ("query", "key", "value")}
    groups = build_groups(traced.spec, model)
    heads = next(group for group in groups if "encoder.layer.0.attention.self.query" in group.layers)
    assert heads.size == 4 and heads.unit == 16 and heads.prunable
    # the residual stream (embeddings, LayerNorms, the attention and FFN output denses) is one channel
    # space, kept whole because its last LayerNorm is the model output
    prunable = {name for group in groups if group.prunable for name in group.layers}
    assert prunable == {f"encoder.layer.{i}.{name}" for i in range(2) for name in (
        "intermediate.dense", "attention.self.query", "attention.self.key", "attention.self.value")}
    assert traced.pinned == {"encoder.layer.1.output.LayerNorm": "its channels reach the model output",
                             "pooler.dense": "its channels reach the model output"}


def test_hf_vit_is_captured_by_torch_export_and_torch_is_left_intact() -> None:
    vit = factories.build("hf:ViTModel", {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                          "intermediate_size": 64, "image_size": 32, "patch_size": 8})
    before = {name: getattr(torch, name) for name in ("empty", "zeros", "ones", "arange", "full", "tensor")}
    traced = trace_model(vit, (1, 3, 32, 32), skip_unsupported=True)  # the class token's cat pins the stream
    assert traced.tracer == "torch.export"
    assert [layer.name for layer in traced.spec.layers if layer.prune] == [
        "layers.0.attention.q_proj", "layers.0.attention.k_proj", "layers.0.attention.v_proj", "layers.0.mlp.fc1"]
    # transformers 4's fx tracer left torch.empty & co. wrapped after a failed trace, after which a
    # `with torch.device("meta")` build (prunectl's memory checks) allocated real weights
    assert {name: getattr(torch, name) for name in before} == before
    with torch.device("meta"):
        assert factories.build("hf:BertModel", BERT_ARGS).encoder.layer[0].output.dense.weight.is_meta


def test_bert_heads_and_ffn_pruned_through_the_whole_pipeline(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = factories.build("hf:BertModel", BERT_ARGS)
    checkpoint = tmp_path / "bert.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": "hf:BertModel", "args": BERT_ARGS}},
               checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(rate=0.5, skip_unsupported=True,
                                                              output=tmp_path / "out", onnx=True))
    manifest = result.manifest.to_json()
    assert manifest["input"] == {"shape": [1, 16], "dtype": "int64"}  # token ids, from the model
    assert manifest["verify"]["soft_vs_hard_max_abs"] <= 1e-5 * max(1.0, manifest["verify"]["reference_max_abs"])
    assert manifest["onnx"]["max_abs"] <= 1e-4
    assert manifest["rebuild"]["args"]["intermediate_size"] == 64
    for i in range(2):
        # the FFN width is the config's intermediate_size (verification/arg_probe.py): a stock config
        assert f"encoder.layer.{i}.intermediate.dense" not in manifest["resize"]
        assert manifest["resize"][f"encoder.layer.{i}.attention.self.key"]["out_features"] == 32  # 2 of 4 heads
        assert manifest["resize"][f"encoder.layer.{i}.attention.output.dense"]["in_features"] == 32
        # transformers 5 views q, k and v as (B, L, -1, head_size): no head count to rewrite
        assert f"encoder.layer.{i}.attention.self" not in manifest["resize"]
    assert result.report["params"]["after"] < result.report["params"]["before"]
    assert len(result.report["traced"]["pinned"]) == 2  # the last LayerNorm, the pooler
    reloaded = prunectl.load(tmp_path / "out")
    ids = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        expected = result.model.eval()(ids).last_hidden_state
        assert torch.allclose(reloaded(ids).last_hidden_state, expected, atol=1e-5)


def test_cli_prunes_a_bert_checkpoint_with_token_ids(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from prunectl.cli import cli

    torch.manual_seed(0)
    checkpoint = tmp_path / "bert.pt"
    torch.save({"state_dict": factories.build("hf:BertModel", BERT_ARGS).state_dict(),
                "model": {"factory": "hf:BertModel", "args": BERT_ARGS}}, checkpoint)
    runner = CliRunner()
    done = runner.invoke(cli, ["prune", str(checkpoint), "--rate", "0.25", "--input-shape", "2,8",
                               "-o", str(tmp_path / "out"), "-q"])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["input"] == {"shape": [2, 8], "dtype": "int64"}  # --input-shape keeps the token-id dtype
    bundle = prunectl.load(tmp_path / "out")
    assert bundle.encoder.layer[1].intermediate.dense.out_features == 96
    assert bundle.encoder.layer[1].attention.self.key.out_features == 48  # 3 of 4 heads of 16
    # (transformers 5 reads no head count in BertSelfAttention's forward: the -1 view follows the heads)
    with torch.no_grad():
        assert bundle(torch.randint(0, 100, (2, 8))).last_hidden_state.shape == (2, 8, 64)


def test_bert_classifier_prunes_its_residual_width_through_embeddings_and_layer_norms(tmp_path: Path) -> None:
    """With a classification head the residual stream no longer reaches the output: embeddings,
    LayerNorms (statistics over the kept channels) and the attention/FFN output denses shrink."""
    torch.manual_seed(0)
    model = factories.build("hf:BertForSequenceClassification", BERT_ARGS)
    checkpoint = tmp_path / "bert_cls.pt"
    torch.save({"state_dict": model.state_dict(),
                "model": {"factory": "hf:BertForSequenceClassification", "args": BERT_ARGS}}, checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(rate=0.5, round_to=1, skip_unsupported=True,
                                                              output=tmp_path / "out", onnx=True))
    widths = {layer["name"]: (layer["before"], layer["after"]) for layer in result.report["layers"]}
    hidden = BERT_ARGS["hidden_size"]
    for name in ("bert.embeddings.word_embeddings", "bert.embeddings.LayerNorm",
                 "bert.encoder.layer.1.output.LayerNorm", "bert.pooler.dense"):
        assert widths[name] == (hidden, hidden // 2), name
    assert result.manifest.extra["onnx"]["max_abs"] <= 1e-4
    reloaded = prunectl.load(tmp_path / "out")
    ids = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, result.model.eval()(ids).logits, atol=1e-5)


def test_a_special_token_id_the_config_class_lacks_is_kept_without_a_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SmolLM2's GGUF gives LlamaConfig an unk_token_id
        model = factories.build("hf:LlamaForCausalLM", {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
                                                      "num_hidden_layers": 1, "num_attention_heads": 2,
                                                      "unk_token_id": 0})
    assert model.config.unk_token_id == 0
