"""Decoder LLMs (tests/support/llm_families.py) through the whole pipeline: traced by torch.export with
the default use_cache=True, whole KV groups, MLP and hidden width cut, soft == hard, reloaded, cached
decoding equal to uncached."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prunectl
from prunectl.models import factory
from prunectl.tracing import trace_model
from tests.support.llm_families import FUSED_LLM_FAMILIES, LLM_FAMILIES

pytest.importorskip("transformers")


def _attention(model: torch.nn.Module, index: int = 0) -> torch.nn.Module:
    return model.model.layers[index].self_attn


@pytest.mark.parametrize("family", sorted(LLM_FAMILIES))
def test_a_decoder_traces_strictly_with_query_heads_grouped_by_their_kv_head(family: str) -> None:
    name, args = LLM_FAMILIES[family]
    model = factory.build(name, args)
    assert model.config.use_cache  # the default: the capture passes use_cache=False itself
    traced = trace_model(model, (1, 16), dtype="int64")  # strict: no --skip-unsupported
    assert traced.tracer == "torch.export"
    layers = {layer.name: layer for layer in traced.spec.layers}
    attention = _attention(model)
    kv_heads, head_dim = args["num_key_value_heads"], attention.head_dim
    group = args["num_attention_heads"] // kv_heads
    prefix = "model.layers.1.self_attn"
    # a channel of the query projection is a KV group: its query heads, group * head_dim outputs
    assert (layers[f"{prefix}.q_proj"].heads, layers[f"{prefix}.q_proj"].head_dim) == (kv_heads, group * head_dim)
    assert (layers[f"{prefix}.k_proj"].heads, layers[f"{prefix}.k_proj"].head_dim) == (kv_heads, head_dim)
    assert set(layers[f"{prefix}.o_proj"].prev) == {f"{prefix}.{p}" for p in ("q_proj", "k_proj", "v_proj")}
    assert layers["model.layers.0.input_layernorm"].prune and layers["model.norm"].prune  # RMSNorms, per channel
    assert set(layers["model.layers.0.mlp.down_proj"].prev) == {"model.layers.0.mlp.gate_proj",
                                                                 "model.layers.0.mlp.up_proj"}
    assert set(traced.pinned) == {"lm_head"}  # only the logits' width is fixed


@pytest.mark.parametrize("family", sorted(LLM_FAMILIES))
def test_a_decoder_prunes_whole_kv_groups_proves_and_reloads(family: str, tmp_path: Path) -> None:
    name, args = LLM_FAMILIES[family]
    torch.manual_seed(0)
    model = factory.build(name, args).eval()
    head_dim = _attention(model).head_dim
    checkpoint = tmp_path / "llm.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": name, "args": args}}, checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(rate=0.5, output=tmp_path / "out"))
    manifest = result.manifest.to_json()
    assert manifest["verify"]["soft_vs_hard_max_abs"] <= 1e-9 * max(1.0, manifest["verify"]["reference_max_abs"])
    group = args["num_attention_heads"] // args["num_key_value_heads"]
    kept_groups = -(-args["num_key_value_heads"] // 2)  # half the KV groups, rounded up
    for layer in result.model.model.layers:
        attention = layer.self_attn
        assert attention.k_proj.out_features == attention.v_proj.out_features == kept_groups * head_dim
        assert attention.q_proj.out_features == attention.o_proj.in_features == kept_groups * group * head_dim
        assert attention.head_dim == head_dim  # RoPE's size never changes
        assert layer.mlp.gate_proj.out_features == layer.mlp.up_proj.out_features == \
            layer.mlp.down_proj.in_features < args["intermediate_size"]
    if args.get("tie_word_embeddings"):
        assert result.model.lm_head.weight is result.model.model.embed_tokens.weight  # tied weights stay tied
    rebuild = manifest["rebuild"]["args"]
    if manifest["hf"]["written"]:  # the head counts are config fields, head_dim explicit: a stock config
        assert (rebuild["num_attention_heads"], rebuild["num_key_value_heads"]) == (kept_groups * group, kept_groups)
        assert rebuild["head_dim"] == head_dim
    else:  # what keeps it from a stock config is said
        assert manifest["hf"]["reason"]
    reloaded = prunectl.load(tmp_path / "out").eval()
    if args.get("tie_word_embeddings"):
        assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    ids = torch.randint(0, args["vocab_size"], (1, 12))
    with torch.no_grad():
        logits = reloaded(ids).logits
        assert logits.shape == (1, 12, args["vocab_size"]) and torch.isfinite(logits).all()
        assert torch.equal(result.model.eval()(ids).logits, logits)  # the pruned model the run proved
        # cached greedy decoding equals decoding without the cache
        cached = reloaded.generate(ids, max_new_tokens=3, do_sample=False, use_cache=True)
        uncached = reloaded.generate(ids, max_new_tokens=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("family", ["llama", "llama_9_on_3", "mistral", "qwen2", "qwen3"])
def test_fewer_kv_heads_and_a_narrower_hidden_width_are_a_stock_config(family: str, tmp_path: Path) -> None:
    name, args = LLM_FAMILIES[family]
    torch.manual_seed(0)
    checkpoint = tmp_path / f"{family}.pt"
    torch.save({"state_dict": factory.build(name, args).state_dict(), "model": {"factory": name, "args": args}},
               checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(rate=0.5, output=tmp_path / family))
    assert result.manifest.extra["hf"]["written"], result.manifest.extra["hf"]
    rebuild = result.manifest.rebuild["args"]
    assert rebuild["hidden_size"] < args["hidden_size"] and rebuild["hidden_size"] % rebuild["num_attention_heads"] == 0
    if family == "llama_9_on_3":  # 40 channels at round-to 8 fit no Llama config with 6 query heads: 48 do
        assert rebuild["hidden_size"] == 48
        assert result.report["selection"]["aligned"] == [
            "model.embed_tokens: 40 -> 48 channels, a multiple of 24 (round-to and the kept query heads: the "
            "config requires hidden_size to be a multiple of num_attention_heads)"]
    else:  # Mistral and Qwen do not ask it; Llama's widths already fit
        assert "aligned" not in result.report["selection"]


def test_gpt2s_fused_c_attn_is_split_into_q_k_v_heads_with_its_split_size_following() -> None:
    name, args = FUSED_LLM_FAMILIES["gpt2"]
    traced = trace_model(factory.build(name, args), (1, 16), dtype="int64")  # strict
    layers = {layer.name: layer for layer in traced.spec.layers}
    prefix = "transformer.h.1.attn"
    # one channel space of whole heads at the offsets of q, k and v (3 parts of 4 heads x 16)
    assert (layers[f"{prefix}.c_attn"].heads, layers[f"{prefix}.c_attn"].head_dim) == (4, 16)
    assert layers[f"{prefix}.split_size"].count  # .split(self.split_size) shrinks with the kept heads
    assert layers[f"{prefix}.c_proj"].prev == (f"{prefix}.c_attn",)
    assert layers["transformer.ln_f"].prune and layers["transformer.h.0.ln_1"].prune  # the residual stream too
    assert set(traced.pinned) == {"lm_head"}


def test_phi3s_sliced_qkv_and_chunked_gate_up_are_parts_of_one_channel_space() -> None:
    name, args = FUSED_LLM_FAMILIES["phi3"]
    traced = trace_model(factory.build(name, args), (1, 16), dtype="int64")  # strict
    layers = {layer.name: layer for layer in traced.spec.layers}
    prefix = "model.layers.1"
    # 2 KV groups: each channel is 2 query heads (32 rows of q), one key head and one value head (16 each)
    qkv = layers[f"{prefix}.self_attn.qkv_proj"]
    assert (qkv.heads, qkv.head_dim) == (2, (32, 16, 16))
    # the slice bounds (config.num_attention_heads * head_dim, ... + num_key_value_heads * head_dim) follow
    assert layers[f"{prefix}.self_attn.config.num_attention_heads"].count
    assert layers[f"{prefix}.self_attn.num_key_value_heads"].count
    assert layers[f"{prefix}.mlp.gate_up_proj"].parts == 2  # gate and up keep the same channels
    assert layers[f"{prefix}.mlp.down_proj"].prev is None  # reads gate * up, the previous layer's space
    assert set(traced.pinned) == {"lm_head"}


FRESH = """
import sys, torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[2])).logits, sys.argv[3])
"""


@pytest.mark.parametrize("family", sorted({**LLM_FAMILIES, **FUSED_LLM_FAMILIES}))
def test_every_family_at_0_3_proves_decodes_with_the_cache_and_is_a_stock_folder(family: str,
                                                                               tmp_path: Path) -> None:
    """Fused projections (GPT-2, Phi-3) cut like the others; Gemma keeps its hidden width (its embeddings
    are scaled by sqrt(hidden_size)), so every family's hf/ loads with stock from_pretrained in a fresh
    process and gives prunectl.load's logits."""
    name, args = {**LLM_FAMILIES, **FUSED_LLM_FAMILIES}[family]
    torch.manual_seed(0)
    model = factory.build(name, args).eval()
    checkpoint = tmp_path / "llm.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": name, "args": args}}, checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(rate=0.3, output=tmp_path / "out"))
    manifest = result.manifest.to_json()
    assert manifest["verify"]["soft_vs_hard_max_abs"] <= 1e-9 * max(1.0, manifest["verify"]["reference_max_abs"])
    assert result.report["params"]["after"] < result.report["params"]["before"]
    assert manifest["hf"]["written"], manifest["hf"]
    if family.startswith("gemma"):
        assert result.model.model.embed_tokens.embedding_dim == args["hidden_size"]
        assert "hidden width kept whole" in result.report["selection"]["aligned"][0]
    if family == "gpt2":  # heads and hidden cut together: n_embd = n_head x the unchanged head_dim
        config = json.loads((tmp_path / "out" / "hf" / "config.json").read_text())
        assert config["n_head"] < args["n_head"] and config["n_embd"] == config["n_head"] * 16
        assert result.report["selection"]["aligned"] == [  # the summary's "aligned" row says what was done
            f"transformer.wte: hidden width {config['n_embd']} = {config['n_head']} heads x head_dim 16, "
            f"{config['n_head']} heads in every attention (the config derives head_dim from the hidden size over "
            "the head count)"]
    if family == "phi3":  # 0.3 of 2 KV groups keeps both; the hidden width and gate/up are cut
        attention = result.model.model.layers[0].self_attn
        assert attention.qkv_proj.in_features < args["hidden_size"] and attention.num_key_value_heads == 2
        assert result.model.model.layers[0].mlp.gate_up_proj.out_features == \
            2 * result.model.model.layers[0].mlp.down_proj.in_features < 2 * args["intermediate_size"]
    reloaded = prunectl.load(tmp_path / "out").eval()
    ids = torch.randint(0, args["vocab_size"], (1, 12))
    with torch.no_grad():
        logits = reloaded(ids).logits
        assert torch.equal(result.model.eval()(ids).logits, logits)
        cached = reloaded.generate(ids, max_new_tokens=3, do_sample=False, use_cache=True)
        uncached = reloaded.generate(ids, max_new_tokens=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    torch.save(ids, tmp_path / "ids.pt")
    subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "out" / "hf"), str(tmp_path / "ids.pt"),
                    str(tmp_path / "stock.pt")], check=True, capture_output=True)
    assert torch.equal(torch.load(tmp_path / "stock.pt"), logits)


def test_phi3_at_0_5_cuts_whole_kv_groups_of_its_sliced_qkv_and_a_stock_config_says_so(tmp_path: Path) -> None:
    name, args = FUSED_LLM_FAMILIES["phi3"]
    torch.manual_seed(0)
    checkpoint = tmp_path / "phi3.pt"
    torch.save({"state_dict": factory.build(name, args).state_dict(), "model": {"factory": name, "args": args}},
               checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(rate=0.5, output=tmp_path / "out"))
    for layer in result.model.model.layers:  # 1 of 2 KV groups: 2 query heads, 1 key, 1 value head of 16
        assert layer.self_attn.qkv_proj.out_features == (2 + 2 * 1) * 16 and layer.self_attn.num_key_value_heads == 1
        assert layer.self_attn.o_proj.in_features == 2 * 16
    assert result.model.config.num_attention_heads == 2  # the slice bound every layer reads
    rebuild = result.manifest.rebuild["args"]
    assert (rebuild["num_attention_heads"], rebuild["num_key_value_heads"], rebuild["head_dim"]) == (2, 1, 16)
    assert result.manifest.extra["hf"]["written"]


def test_phi3_layers_keep_one_kv_group_count_since_one_config_field_sizes_every_layers_slice(tmp_path: Path) -> None:
    """config.num_attention_heads bounds the q slice of every layer: a layer asked to keep fewer KV groups
    (its own rate) keeps as many as the others, and the report says why."""
    from dataclasses import replace

    from prunectl.formats.spec import write_spec

    name, args = FUSED_LLM_FAMILIES["phi3"]
    torch.manual_seed(0)
    model = factory.build(name, args).eval()
    spec = trace_model(model, (1, 16), dtype="int64").spec
    qkv = "model.layers.0.self_attn.qkv_proj"
    spec = replace(spec, layers=tuple(replace(layer, rate=0.5) if layer.name == qkv else layer
                                      for layer in spec.layers))
    write_spec(spec, tmp_path / "spec.json")
    torch.save({"state_dict": model.state_dict(), "model": {"factory": name, "args": args}}, tmp_path / "phi3.pt")
    result = prunectl.prune(tmp_path / "phi3.pt", prunectl.PruneOptions(spec=tmp_path / "spec.json", rate=0.3,
                                                                        output=tmp_path / "out"))
    assert [layer.self_attn.num_key_value_heads for layer in result.model.model.layers] == [2, 2]
    assert any("num_attention_heads" in note for note in result.report["selection"]["aligned"])
    assert result.manifest.extra["hf"]["written"]
