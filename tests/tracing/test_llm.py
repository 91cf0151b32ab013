"""Decoder LLMs (tiny random-init Llama with grouped-query attention, Qwen2) through the whole pipeline:
traced by torch.export with the default use_cache=True, MLP and hidden width cut, soft == hard, reloaded."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prunectl
from prunectl.models import factory
from prunectl.tracing import trace_model

pytest.importorskip("transformers")

# 4 query heads on 2 key/value heads
ARGS = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}
FAMILIES = ["hf:LlamaForCausalLM", "hf:Qwen2ForCausalLM"]


@pytest.mark.parametrize("name", FAMILIES)
def test_a_decoder_traces_strictly_with_rms_norms_listed_and_attention_pinned(name: str) -> None:
    model = factory.build(name, ARGS)
    assert model.config.use_cache  # the default: the capture passes use_cache=False itself
    traced = trace_model(model, (1, 16), dtype="int64")  # strict: no --skip-unsupported
    assert traced.tracer == "torch.export"
    layers = {layer.name: layer for layer in traced.spec.layers}
    assert layers["model.layers.0.input_layernorm"].prune and layers["model.norm"].prune  # RMSNorms, per channel
    assert set(layers["model.layers.0.mlp.down_proj"].prev) == {"model.layers.0.mlp.gate_proj",
                                                                 "model.layers.0.mlp.up_proj"}
    for projection in ("q_proj", "k_proj", "v_proj"):
        assert "4 query heads on 2 key/value heads" in traced.pinned[f"model.layers.1.self_attn.{projection}"]
    assert model.config.use_cache


@pytest.mark.parametrize("name", FAMILIES)
def test_a_decoder_prunes_proves_and_reloads(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = factory.build(name, ARGS).eval()
    checkpoint = tmp_path / "llm.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": name, "args": ARGS}}, checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(rate=0.3, output=tmp_path / "out"))
    manifest = result.manifest.to_json()
    assert manifest["verify"]["soft_vs_hard_max_abs"] <= 1e-9 * max(1.0, manifest["verify"]["reference_max_abs"])
    assert result.report["params"]["after"] < result.report["params"]["before"]
    for layer in result.model.model.layers:  # gate and up cut together, down's inputs with them; attention untouched
        assert layer.mlp.gate_proj.out_features == layer.mlp.up_proj.out_features == \
            layer.mlp.down_proj.in_features < 96
        assert layer.self_attn.k_proj.out_features == 32
    # the widths are config fields (a stock config): MLP width, hidden width, head_dim explicit
    args = manifest["rebuild"]["args"]
    assert args["intermediate_size"] == result.model.model.layers[0].mlp.gate_proj.out_features
    if name == "hf:LlamaForCausalLM":  # Qwen2's config has no head_dim field: its hidden width stays in resize
        assert args["hidden_size"] == result.model.model.embed_tokens.embedding_dim < 64 and args["head_dim"] == 16
    reloaded = prunectl.load(tmp_path / "out")
    ids = torch.randint(0, ARGS["vocab_size"], (1, 12))
    with torch.no_grad():
        logits = reloaded(ids).logits
        assert logits.shape == (1, 12, ARGS["vocab_size"]) and torch.isfinite(logits).all()
        assert torch.equal(result.model.eval()(ids).logits, logits)  # the pruned model the run proved
        # cached greedy decoding equals decoding without the cache
        cached = reloaded.generate(ids, max_new_tokens=3, do_sample=False, use_cache=True)
        uncached = reloaded.generate(ids, max_new_tokens=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
