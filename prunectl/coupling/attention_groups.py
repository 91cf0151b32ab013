"""Channel spaces of attention heads: a listed nn.MultiheadAttention, and a projection with heads.

A head is one channel spanning head_dim rows in every q/k/v block of its projection; only the
attention's own out_proj reads a listed attention's heads (docs/decisions.md).
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import SpecError, UnsupportedError
from ..formats.spec import LayerSpec
from ..layers import kinds as L
from .channel_spaces import Cat, Member, Ref, Spaces, expect_width


def source_is_fixed(name: str, modules: dict[str, nn.Module]) -> bool:
    """A MultiheadAttention's out_proj: its input is the heads (embed_dim), whole unless the
    attention itself is listed."""
    owner, _, attr = name.rpartition(".")
    return attr == "out_proj" and isinstance(modules.get(owner), nn.MultiheadAttention)


def check_heads_reader(layer: LayerSpec, last_name: str | None, attentions: set[str], key: str) -> None:
    """An attention's heads are read by its own out_proj, and its out_proj reads nothing else."""
    if layer.cat is not None:
        reads = {name for part in layer.cat for name in part}
    elif layer.prev is None:
        reads = {last_name} if last_name is not None else set()
    else:
        reads = set(layer.prev)
    owner = layer.name.rpartition(".")[0]
    for name in sorted(reads & attentions):
        if layer.name != f"{name}.out_proj" or len(reads) > 1 or layer.cat is not None:
            raise SpecError(f"{key}: reads the heads of attention {name!r}; only {name}.out_proj reads them "
                            "(list it right after the attention, or give this layer its own \"prev\")")
    if owner in attentions and layer.name == f"{owner}.out_proj" and reads != {owner}:
        raise SpecError(f"{key}: the attention {owner!r} is listed, so its out_proj reads its heads: "
                        f"list it right after {owner!r} with no \"prev\"")


def connect_attention(name: str, module: nn.Module, source: Ref | Cat | None, spaces: Spaces,
                      key: str) -> Ref:
    """A self-attention: its input columns follow the stream it reads; its heads are a new space
    whose every channel spans head_dim rows in each of the q, k and v blocks of in_proj."""
    if isinstance(source, Cat):
        raise UnsupportedError(f"{key}: an attention reading a concatenation of channels is not supported; "
                               "mark the layers of its input \"prune\": false")
    if source is not None:
        expect_width(key, L.in_width(module), spaces, source, "input features")
        source = Ref(spaces.find(source.space), source.factor)
        spaces.group(source.space).members.append(Member(name, "in", source.factor))
    heads = spaces.new(module.num_heads)
    spaces.group(heads).heads = True
    for part in range(3):  # q, k, v: the same heads at offsets 0, E, 2E of in_proj's rows
        spaces.group(heads).members.append(Member(name, "out", module.head_dim, scored=part == 0,
                                                  offset=part * module.embed_dim))
    return Ref(heads, module.head_dim)


def as_heads(layer: LayerSpec, module: nn.Module, ref: Ref | Cat, spaces: Spaces, key: str) -> Ref:
    """A projection whose outputs are attention heads: its space is the heads, each spanning
    head_dim outputs, in every one of its parts (a fused qkv has three: q, k, v at offsets)."""
    heads, head_dim = layer.heads, layer.head_dim
    group = spaces.group(ref.space) if isinstance(ref, Ref) else None
    fresh = group is not None and group.members == [Member(layer.name, "out", 1, scored=True)] and group.blocks == 1
    if L.kind_of(module) not in ("conv", "linear") or not fresh:
        raise SpecError(f"{key}.heads: only a conv or linear layer whose outputs are its own (not depthwise or "
                        "grouped, not reading a concatenation) has heads")
    width = L.out_width(module)
    if width % (heads * head_dim):
        raise SpecError(f"{key}.heads: {width} outputs are not a whole number of parts of {heads} heads x "
                        f"{head_dim} (head_dim)")
    group.size, group.heads = heads, True
    group.members = [Member(layer.name, "out", head_dim, scored=part == 0, offset=part * heads * head_dim)
                     for part in range(width // (heads * head_dim))]
    return Ref(ref.space, head_dim)
