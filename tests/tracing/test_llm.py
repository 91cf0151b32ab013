"""Decoder LLMs (tests/support/llm_families.py) through the whole pipeline: traced by torch.export with
the default use_cache=True, whole KV groups, MLP and hidden width cut, soft == hard, reloaded, cached
decoding equal to uncached."""
from __future__ import annotations

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


@pytest.mark.parametrize("family", sorted(FUSED_LLM_FAMILIES))
def test_a_fused_attention_traces_to_its_split_and_no_further(family: str) -> None:
    name, args = FUSED_LLM_FAMILIES[family]
    with pytest.raises(prunectl.UnsupportedError, match=r"attn:split \(split\) splits the channel dim"):
        trace_model(factory.build(name, args), (1, 16), dtype="int64")


@pytest.mark.parametrize("family", sorted(FUSED_LLM_FAMILIES))
def test_gpt2s_mlp_is_cut_proven_and_a_stock_folder(family: str, tmp_path: Path) -> None:
    """Conv1D layers cut like Linear ones; n_inner (None: 4 * n_embd) is made explicit at the cut width,
    so hf/ is a stock GPT2Config folder; the fused c_attn stays whole (--skip-unsupported)."""
    from transformers import AutoModelForCausalLM

    name, args = FUSED_LLM_FAMILIES[family]
    torch.manual_seed(0)
    checkpoint = tmp_path / "gpt2.pt"
    torch.save({"state_dict": factory.build(name, args).state_dict(), "model": {"factory": name, "args": args}},
               checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(rate=0.5, output=tmp_path / "out",
                                                              skip_unsupported=True))
    manifest = result.manifest.to_json()
    assert manifest["verify"]["soft_vs_hard_max_abs"] <= 1e-9 * max(1.0, manifest["verify"]["reference_max_abs"])
    for block in result.model.transformer.h:
        assert block.mlp.c_fc.nf == block.mlp.c_proj.nx == block.mlp.c_fc.weight.shape[1] < 4 * args["n_embd"]
        assert block.attn.c_attn.nf == 3 * args["n_embd"]  # the fused q/k/v: not cut yet
    assert manifest["rebuild"]["args"]["n_inner"] == result.model.transformer.h[0].mlp.c_fc.nf
    assert manifest["hf"]["written"], manifest["hf"]
    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "hf").eval()
    ids = torch.randint(0, args["vocab_size"], (1, 12))
    with torch.no_grad():
        assert torch.equal(stock(ids).logits, prunectl.load(tmp_path / "out").eval()(ids).logits)
        cached = stock.generate(ids, max_new_tokens=3, do_sample=False, use_cache=True)
        uncached = stock.generate(ids, max_new_tokens=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
