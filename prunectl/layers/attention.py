"""Self-attention whose residual width was cut while its inner width (embed_dim) stays.

ViT's blocks read the residual stream with ``nn.MultiheadAttention`` and write back into it.
Cutting the residual width means cutting the input columns of ``in_proj_weight`` and the output
rows of ``out_proj``; the heads (``embed_dim``, ``num_heads``, ``head_dim``, hence the softmax
scale) are unchanged, so soft == hard stays exact. ``nn.MultiheadAttention`` cannot express a
query width other than ``embed_dim``, so the hard model's module gets this subclass (same
parameters, same state_dict keys): ``adapt_attention`` swaps the class wherever the shapes no
longer match, after surgery and after a bundle's ``resize``. Only what the tracer admits is
supported: self-attention (query is key is value), packed in_proj, no bias_k/add_zero_attn.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnsupportedError


class ResidualCutMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` reading ``in_proj_weight.shape[1]`` features and writing
    ``out_proj.out_features`` (either may differ from ``embed_dim``)."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise UnsupportedError("a residual-cut MultiheadAttention takes no attention masks")
        if not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        e, heads = self.embed_dim, self.num_heads
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(query, w[:e], None if b is None else b[:e])
        k = F.linear(key, w[e:2 * e], None if b is None else b[e:2 * e])
        v = F.linear(value, w[2 * e:], None if b is None else b[2 * e:])
        n, length, _ = q.shape
        q, k, v = (t.reshape(n, t.shape[1], heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
            out = F.dropout(weights, dropout) @ v
        else:  # the op nn.MultiheadAttention itself uses here (same numerics, same MAC count)
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(n, length, e)
        out = self.out_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(dim=1) if average_attn_weights else weights


@contextmanager
def unfused_attention() -> Iterator[None]:
    """nn.MultiheadAttention and nn.TransformerEncoderLayer off their fused eval paths.

    The fused paths read the norm and projection weights themselves: the soft model's masked
    LayerNorm statistics (cut/masked_norms.py) would be bypassed, and the flop counter sees one opaque
    op. Every run that verifies or counts uses the module-by-module path (same math)."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def adapt_attention(model: nn.Module) -> None:
    """Give every MultiheadAttention whose residual width differs from ``embed_dim`` the subclass."""
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) and type(module) in (nn.MultiheadAttention,
                                                                         ResidualCutMultiheadAttention):
            if module.in_proj_weight is None:
                continue  # separate q/k/v projections: never cut
            cut = module.in_proj_weight.shape[1] != module.embed_dim or module.out_proj.out_features != module.embed_dim
            module.__class__ = ResidualCutMultiheadAttention if cut else nn.MultiheadAttention
            # nn.TransformerEncoderLayer's fused path reads in_proj itself, as if embed_dim wide: a cut
            # attention must be called as a module, and this flag is what that path checks
            module._qkv_same_embed_dim = not cut


def self_attention_problem(module: nn.Module, args: tuple, kwargs: dict, nodes: tuple) -> str | None:
    """Why a traced MultiheadAttention call cannot have its residual width cut (None: it can)."""
    if type(module) not in (nn.MultiheadAttention, ResidualCutMultiheadAttention):  # ours: a pruned one
        return f"is a {type(module).__name__}, a MultiheadAttention subclass prunectl does not know"
    if module.in_proj_weight is None or module.bias_k is not None or module.add_zero_attn:
        return "is a MultiheadAttention with separate q/k/v projections, bias_k or add_zero_attn"
    if len(nodes) < 3 or not (nodes[0] is nodes[1] is nodes[2]):
        return "is cross-attention (query, key and value differ); only self-attention is supported"
    extra = dict(zip(("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal"),
                     args[3:]))
    extra.update(kwargs)
    if any(extra.get(key) is not None and extra.get(key) is not False
           for key in ("key_padding_mask", "attn_mask", "is_causal")):
        return "is called with an attention mask"
    return None
