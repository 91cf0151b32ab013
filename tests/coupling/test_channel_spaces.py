"""The union-find over channel spaces and the groups it yields (coupling/channel_spaces.py)."""
from __future__ import annotations

import pytest

from prunectl.coupling.channel_spaces import (
    Cat,
    ChannelGroup,
    Member,
    Ref,
    Spaces,
    constrain_blocks,
    expect_width,
    lcm,
    parts_of,
)
from prunectl.errors import SpecError


def test_union_merges_members_pins_rates_blocks_and_heads_into_the_lower_root() -> None:
    spaces = Spaces()
    a, b, c = spaces.new(8), spaces.new(8), spaces.new(4)
    spaces.group(a).members.append(Member("conv1", "out", scored=True))
    spaces.group(a).rates.append(0.3)
    spaces.group(b).members.append(Member("conv2", "out", scored=True))
    spaces.group(b).pinned_by.append("conv2: prune: false")
    spaces.group(b).blocks = 2
    spaces.group(b).heads = True
    assert spaces.union(b, a) == a  # the lower index is the root, whichever way round
    merged = spaces.group(b)
    assert merged is spaces.group(a)
    assert [m.module for m in merged.members] == ["conv1", "conv2"]
    assert merged.rates == [0.3] and merged.pinned_by == ["conv2: prune: false"]
    assert merged.blocks == 2 and merged.heads and not merged.prunable
    assert spaces.union(a, b) == a  # already one space: nothing changes
    assert len(merged.members) == 2
    assert spaces.roots() == [spaces.group(a), spaces.group(c)]


def test_find_compresses_paths_of_a_long_chain() -> None:
    spaces = Spaces()
    ids = [spaces.new(4) for _ in range(6)]
    for left, right in zip(ids, ids[1:]):
        spaces.union(left, right)
    assert {spaces.find(i) for i in ids} == {0}
    assert all(spaces.parent[i] == 0 for i in ids)


def test_unit_is_the_narrowest_factor_and_counts_are_ignored() -> None:
    group = ChannelGroup(size=4, members=[Member("qkv", "out", 16, scored=True), Member("proj", "in", 16),
                                          Member("attn.num_heads", "out", 1, count=True)])
    assert group.unit == 16
    assert ChannelGroup(size=4).unit == 1


def test_parts_counts_the_output_blocks_of_one_module() -> None:
    group = ChannelGroup(size=2, members=[Member("qkv", "out", 8, scored=True, offset=0),
                                          Member("qkv", "out", 8, offset=16), Member("qkv", "out", 8, offset=32),
                                          Member("proj", "in", 8)])
    assert group.parts("qkv") == 3
    assert group.parts("proj") == 1  # an input side is one block
    assert group.parts("unrelated") == 1


def test_name_is_the_first_layer_or_a_placeholder() -> None:
    assert ChannelGroup(size=3, layers=["conv1", "bn1"]).name == "conv1"
    assert ChannelGroup(size=3).name == "<unnamed>"


def test_constrain_blocks_sets_the_lcm_or_pins_with_a_reason() -> None:
    group = ChannelGroup(size=12, blocks=2)
    constrain_blocks(group, 3, 1, "conv")
    assert group.blocks == 6 and group.prunable
    strided = ChannelGroup(size=12)
    constrain_blocks(strided, 2, 4, "gconv")
    assert strided.pinned_by == ["gconv: grouped conv over a strided channel layout"]
    uneven = ChannelGroup(size=10)
    constrain_blocks(uneven, 4, 1, "gconv")
    assert uneven.pinned_by == ["gconv: 10 channels cannot be split into 4 equal blocks"]


def test_expect_width_names_both_widths_and_the_fix() -> None:
    spaces = Spaces()
    space = spaces.new(16)
    expect_width("spec.json: layers.fc", 32, spaces, Ref(space, 2), "input features")  # 16 x 2: fine
    with pytest.raises(SpecError, match=r"layers\.fc: takes 30 input features, but the layer before it .* gives 32"):
        expect_width("spec.json: layers.fc", 30, spaces, Ref(space, 2), "input features")


def test_parts_of_and_lcm() -> None:
    assert parts_of(Ref(3)) == (Ref(3),)
    assert parts_of(Cat((Ref(1), Ref(2, 4)))) == (Ref(1), Ref(2, 4))
    assert lcm(4, 6) == 12 and lcm(1, 7) == 7
