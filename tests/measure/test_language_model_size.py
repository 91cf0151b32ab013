"""report.json's language_model: parameters without the embeddings and KV-cache bytes per token,
counted by hand on a tiny decoder whose KV groups are halved."""
from __future__ import annotations

import pytest
import torch

import prunectl
from tests.support.text_models import ARGS, FACTORY, tiny_llama

pytest.importorskip("transformers")


def test_params_without_embeddings_and_kv_cache_bytes_per_token(tmp_path) -> None:
    model = tiny_llama()
    checkpoint = tmp_path / "llm.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": FACTORY, "args": ARGS}}, checkpoint)
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(rate=0, rate_heads=0.5))
    sizes = result.report["language_model"]
    embeddings = 2 * ARGS["vocab_size"] * ARGS["hidden_size"]  # embed_tokens and the untied lm_head
    assert sizes["params_without_embeddings"]["before"] == sum(p.numel() for p in model.parameters()) - embeddings
    pruned = result.model
    assert sizes["params_without_embeddings"]["after"] == sum(p.numel() for p in pruned.parameters()) - embeddings
    head_dim = ARGS["hidden_size"] // ARGS["num_attention_heads"]
    per_layer = 2 * ARGS["num_key_value_heads"] * head_dim * 4  # keys and values, float32
    assert sizes["kv_cache_bytes_per_token"] == {"before": ARGS["num_hidden_layers"] * per_layer,
                                                 "after": ARGS["num_hidden_layers"] * per_layer // 2}
