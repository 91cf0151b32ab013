"""Channel spaces of attention heads: a listed nn.MultiheadAttention, and a projection with heads.

A head is one channel spanning head_dim rows in every q/k/v block of its projection (a fused
producer's parts, GPT-2's c_attn and Phi-3's qkv_proj and gate_up_proj, the same way); only the
attention's own out_proj reads a listed attention's heads (docs/decisions.md).
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import SpecError, UnsupportedError
from ..formats.spec import LayerSpec
from ..layers import kinds as L
from .channel_spaces import Cat, ChannelGroup, Member, Ref, Spaces, expect_width


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
    head_dim outputs, in every one of its parts (a fused qkv has three: q, k, v at offsets). With
    one head_dim per part (a fused grouped-query q/k/v: a KV group's query heads, its key head,
    its value head) part i spans ``heads * head_dim[i]`` outputs; its readers take the first
    part's layout (the attention output is laid out as the queries)."""
    heads = layer.heads
    group = _fresh_group(layer, module, ref, spaces, key, "heads")
    width = L.out_width(module)
    if isinstance(layer.head_dim, tuple):
        units = list(layer.head_dim)
        if sum(units) * heads != width:
            raise SpecError(f"{key}.head_dim: {width} outputs are not {heads} heads x ({' + '.join(map(str, units))})")
    else:
        if width % (heads * layer.head_dim):
            raise SpecError(f"{key}.heads: {width} outputs are not a whole number of parts of {heads} heads x "
                            f"{layer.head_dim} (head_dim)")
        units = [layer.head_dim] * (width // (heads * layer.head_dim))
    group.size, group.heads = heads, True
    group.members = _part_members(layer.name, heads, units)
    return Ref(ref.space, units[0])


def as_parts(layer: LayerSpec, module: nn.Module, ref: Ref | Cat, spaces: Spaces, key: str) -> Ref:
    """A producer whose outputs are ``parts`` equal blocks of one channel space (gate and up of a
    fused gate_up_proj): channel c is output c of every block."""
    group = _fresh_group(layer, module, ref, spaces, key, "parts")
    width = L.out_width(module)
    if width % layer.parts:
        raise SpecError(f"{key}.parts: {width} outputs do not split into {layer.parts} equal parts")
    group.size = width // layer.parts
    group.members = _part_members(layer.name, group.size, [1] * layer.parts)
    return Ref(ref.space, 1)


def _fresh_group(layer: LayerSpec, module: nn.Module, ref: Ref | Cat, spaces: Spaces, key: str,
                 what: str) -> ChannelGroup:
    group = spaces.group(ref.space) if isinstance(ref, Ref) else None
    fresh = group is not None and group.members == [Member(layer.name, "out", 1, scored=True)] and group.blocks == 1
    if L.kind_of(module) not in ("conv", "linear") or not fresh:
        raise SpecError(f"{key}.{what}: only a conv or linear layer whose outputs are its own (not depthwise or "
                        f"grouped, not reading a concatenation) has {what}")
    return group


def _part_members(name: str, channels: int, units: list[int]) -> list[Member]:
    """One member per part, each at its offset; the criterion scores the first."""
    members, offset = [], 0
    for index, unit in enumerate(units):
        members.append(Member(name, "out", unit, scored=index == 0, offset=offset))
        offset += channels * unit
    return members
