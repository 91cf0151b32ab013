"""What a language model costs beyond its parameter count: parameters without the embeddings, and
the KV cache's bytes per token.

The embeddings (the input embedding and an untied output projection, ``vocab x hidden`` each) are
most of a small LLM's parameters (SmolLM2-135M: 28 M of 135 M) and cost no compute per token beyond
a lookup and the logits, so a cut is judged on the rest too. The KV cache holds every layer's keys
and values: per token, the sum over attention layers of the ``k_proj`` and ``v_proj`` output widths
times the bytes of the parameters' dtype (a cut of whole KV groups shrinks it; a cut of query heads
alone would not).
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn


def language_model_sizes(before: nn.Module, after: nn.Module) -> dict[str, Any]:
    """report.json's ``language_model`` (transformers models with an input embedding), else nothing."""
    if _embeddings(before) is None:
        return {}
    pairs = {"params_without_embeddings": (_params_without_embeddings(before), _params_without_embeddings(after))}
    if kv_cache_bytes_per_token(before):  # decoders with k_proj/v_proj (an encoder's key/value cache nothing)
        pairs["kv_cache_bytes_per_token"] = (kv_cache_bytes_per_token(before), kv_cache_bytes_per_token(after))
    return {"language_model": {key: {"before": b, "after": a} for key, (b, a) in pairs.items()}}


def kv_cache_bytes_per_token(model: nn.Module) -> int:
    total = 0
    for module in model.modules():
        keys, values = getattr(module, "k_proj", None), getattr(module, "v_proj", None)
        if isinstance(keys, nn.Linear) and isinstance(values, nn.Linear):
            total += (keys.out_features + values.out_features) * keys.weight.element_size()
    return total


def _embeddings(model: nn.Module) -> list[nn.Module] | None:
    get_input = getattr(model, "get_input_embeddings", None)
    embedding = get_input() if callable(get_input) else None
    if not isinstance(embedding, nn.Embedding):
        return None
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    return [embedding] + ([output] if isinstance(output, nn.Module) else [])


def _params_without_embeddings(model: nn.Module) -> int:
    embedded = {id(p) for module in _embeddings(model) or [] for p in module.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedded)
