"""Channel spaces of attention heads (coupling/attention_groups.py)."""
from __future__ import annotations

import pytest
import torch.nn as nn

from prunectl.coupling.attention_groups import as_heads, check_heads_reader, connect_attention, source_is_fixed
from prunectl.coupling.channel_spaces import Cat, Member, Ref, Spaces
from prunectl.errors import SpecError, UnsupportedError
from prunectl.formats.spec import LayerSpec


def _producer(spaces: Spaces, name: str, width: int) -> Ref:
    space = spaces.new(width)
    spaces.group(space).members.append(Member(name, "out", 1, scored=True))
    return Ref(space)


def test_attention_heads_span_head_dim_rows_in_each_of_q_k_v_and_read_the_stream() -> None:
    spaces = Spaces()
    stream = _producer(spaces, "embed", 12)
    attention = nn.MultiheadAttention(12, 3)
    ref = connect_attention("attn", attention, stream, spaces, "spec: layers.attn")
    heads = spaces.group(ref.space)
    assert ref.factor == 4 and heads.size == 3 and heads.heads
    assert [(m.side, m.factor, m.offset, m.scored) for m in heads.members] == [
        ("out", 4, 0, True), ("out", 4, 12, False), ("out", 4, 24, False)]
    assert Member("attn", "in", 1) in spaces.group(stream.space).members  # in_proj's columns follow the stream


def test_attention_on_a_concatenation_is_unsupported_and_a_width_mismatch_is_named() -> None:
    spaces = Spaces()
    parts = Cat((_producer(spaces, "a", 6), _producer(spaces, "b", 6)))
    with pytest.raises(UnsupportedError, match="concatenation"):
        connect_attention("attn", nn.MultiheadAttention(12, 3), parts, spaces, "key")
    with pytest.raises(SpecError, match="takes 12 input features"):
        connect_attention("attn", nn.MultiheadAttention(12, 3), _producer(spaces, "c", 8), spaces, "key")


def test_as_heads_splits_a_fused_qkv_into_three_parts_of_heads() -> None:
    spaces = Spaces()
    qkv = _producer(spaces, "qkv", 24)
    layer = LayerSpec("qkv", heads=2, head_dim=4)
    ref = as_heads(layer, nn.Linear(8, 24), qkv, spaces, "key")
    group = spaces.group(ref.space)
    assert ref.factor == 4 and group.size == 2 and group.heads
    assert [(m.offset, m.scored) for m in group.members] == [(0, True), (8, False), (16, False)]


def test_as_heads_refuses_what_is_not_a_fresh_projection_or_not_whole_heads() -> None:
    spaces = Spaces()
    with pytest.raises(SpecError, match="not a whole number of parts of 2 heads x 4"):
        as_heads(LayerSpec("q", heads=2, head_dim=4), nn.Linear(8, 12), _producer(spaces, "q", 12), spaces, "key")
    shared = _producer(spaces, "q", 8)
    spaces.group(shared.space).members.append(Member("other", "in"))
    with pytest.raises(SpecError, match="only a conv or linear layer whose outputs are its own"):
        as_heads(LayerSpec("q", heads=2, head_dim=4), nn.Linear(8, 8), shared, spaces, "key")


def test_only_its_own_out_proj_reads_a_listed_attention() -> None:
    attentions = {"attn"}
    check_heads_reader(LayerSpec("attn.out_proj"), "attn", attentions, "key")  # fine
    with pytest.raises(SpecError, match="only attn.out_proj reads them"):
        check_heads_reader(LayerSpec("fc", prev=("attn",)), "x", attentions, "key")
    with pytest.raises(SpecError, match="list it right after 'attn' with no \"prev\""):
        check_heads_reader(LayerSpec("attn.out_proj", prev=("embed",)), "embed", attentions, "key")


def test_out_proj_of_a_multihead_attention_has_a_fixed_source() -> None:
    modules = {"attn": nn.MultiheadAttention(8, 2), "fc": nn.Linear(8, 8), "block": nn.Sequential()}
    assert source_is_fixed("attn.out_proj", modules)
    assert not source_is_fixed("fc", modules) and not source_is_fixed("block.out_proj", modules)
