"""What the trace keeps whole in transformers decoders (Llama, Qwen2, Mistral), and why.

Their attention modules repeat each key/value head over its group of query heads
(``num_key_value_groups``, grouped-query attention): a cut must take a KV head together with its
query heads, and the config's head counts with it. The walk cannot follow that yet, so the
q/k/v projections of such an attention are pinned here with a reason the summary shows, instead
of the reshape and attention-product incidents that would stop the trace (exit 6). The MLP and
the hidden width are traced as usual.
"""
from __future__ import annotations

import torch.nn as nn

from .graph import TracedLayer

_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def attention_pins(model: nn.Module, layers: list[TracedLayer]) -> dict[str, str]:
    """Listed q/k/v projections of grouped-query attention modules -> why they keep every channel."""
    listed = {layer.name for layer in layers}
    pins: dict[str, str] = {}
    for path, module in model.named_modules():
        groups = getattr(module, "num_key_value_groups", None)
        if not isinstance(groups, int) or not all(isinstance(getattr(module, p, None), nn.Linear)
                                                  for p in _PROJECTIONS):
            continue
        head_dim = getattr(module, "head_dim", None)
        if not isinstance(head_dim, int) or head_dim <= 0:
            continue
        kv_heads = module.k_proj.out_features // head_dim
        why = (f"attention heads are not cut ({kv_heads * groups} query heads on {kv_heads} key/value heads: "
               "cutting whole KV groups is not supported yet)")
        for projection in _PROJECTIONS:
            name = f"{path}.{projection}" if path else projection
            if name in listed:
                pins[name] = why
    return pins


__all__ = ["attention_pins"]
