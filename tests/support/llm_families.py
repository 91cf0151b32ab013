"""Tiny random-init configs of the decoder families prunectl supports (docs/zoo_llm.md).

Each has grouped-query attention (more query heads than key/value heads) so a cut of whole KV
groups is exercised; ``llama_9_on_3`` has SmolLM2-135M's odd group size and tied embeddings.
"""
from __future__ import annotations

_BASE = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}

# id -> (factory, args)
LLM_FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": ("hf:LlamaForCausalLM", _BASE),
    "llama_9_on_3": ("hf:LlamaForCausalLM", {**_BASE, "hidden_size": 72, "num_attention_heads": 9,
                                             "num_key_value_heads": 3, "tie_word_embeddings": True}),
    "mistral": ("hf:MistralForCausalLM", _BASE),
    "qwen2": ("hf:Qwen2ForCausalLM", _BASE),
    "qwen3": ("hf:Qwen3ForCausalLM", {**_BASE, "head_dim": 16}),  # q_norm/k_norm over head_dim
    # head_dim not hidden/heads, tied embeddings, soft-capping (eager attention), sliding layers
    "gemma2": ("hf:Gemma2ForCausalLM", {**_BASE, "head_dim": 24, "sliding_window": 8}),
    "gemma3": ("hf:Gemma3ForCausalLM", {**_BASE, "head_dim": 24, "sliding_window": 8}),
}

# Families with fused projections (a "split producer", docs/decisions.md): GPT-2's Conv1D c_attn gives
# q, k and v through .split(split_size, dim=2); Phi-3's qkv_proj is sliced into a grouped q, k and v,
# its gate_up_proj chunked into gate and up.
FUSED_LLM_FAMILIES: dict[str, tuple[str, dict]] = {
    "gpt2": ("hf:GPT2LMHeadModel", {"vocab_size": 128, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64}),
    "phi3": ("hf:Phi3ForCausalLM", {**_BASE, "pad_token_id": 0}),
}
