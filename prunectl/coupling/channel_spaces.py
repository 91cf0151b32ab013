"""The data of channel coupling: members, groups and the union-find over channel spaces.

``groups.build_groups`` (and ``attention_groups`` for attention heads) fill these from a spec.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd

from ..errors import SpecError


@dataclass(frozen=True)
class Member:
    module: str
    side: str  # "out": the module's output channels; "in": its input channels
    factor: int = 1  # each group channel spans `factor` consecutive indices of this dimension
    scored: bool = False  # the criterion scores this member's output filters
    offset: int = 0  # a concatenation: this group's channels start at this index of the dimension
    axis: int | None = None  # a parameter entry ("module.param"): the parameter's channel axis
    count: bool = False  # an attribute entry ("module.attr"): an int holding the channel count


@dataclass
class ChannelGroup:
    """Channels that must be kept or removed together."""

    size: int
    members: list[Member] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # spec layers whose outputs live here
    pinned_by: list[str] = field(default_factory=list)  # why it must not be pruned
    rates: list[float] = field(default_factory=list)  # per-layer rates given in the spec
    blocks: int = 1  # grouped convs: kept channels must be spread equally over this many blocks
    heads: bool = False  # attention heads: a reader may take them one per input (split) or head_dim each

    @property
    def prunable(self) -> bool:
        return not self.pinned_by

    @property
    def unit(self) -> int:
        """Tensor indices one channel spans in every layer member (an attention head: head_dim rows;
        a parameter entry with one value per head, Swin's bias table, does not make it 1)."""
        layers = [member.factor for member in self.members if not member.count and member.axis is None]
        return min(layers or [member.factor for member in self.members if not member.count], default=1)

    def parts(self, module: str) -> int:
        """How many equal blocks of this group's channels ``module`` outputs (a fused q/k/v: 3); 1 where
        the blocks differ in width (Phi-3's grouped q, k, v: ``part_members`` says where each is)."""
        outs = self.part_members(module)
        return len(outs) if len({member.factor for member in outs}) == 1 else 1

    def part_members(self, module: str) -> list[Member]:
        """``module``'s output members, one per block of this group's channels, by offset."""
        return sorted((m for m in self.members if m.module == module and m.side == "out"), key=lambda m: m.offset) \
            or []

    @property
    def name(self) -> str:
        return self.layers[0] if self.layers else "<unnamed>"


@dataclass(frozen=True)
class Ref:
    """A tensor whose channel dim is channel space `space`, each channel `factor` wide."""

    space: int
    factor: int = 1


class Spaces:
    """Union-find over channel spaces; merging joins members, pins and block constraints."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(ChannelGroup(size=size))
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def group(self, space: int) -> ChannelGroup:
        return self.groups[self.find(space)]

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        keep, gone = min(ra, rb), max(ra, rb)
        self.parent[gone] = keep
        target, source = self.groups[keep], self.groups[gone]
        target.members += source.members
        target.layers += source.layers
        target.pinned_by += source.pinned_by
        target.rates += source.rates
        target.blocks = lcm(target.blocks, source.blocks)
        target.heads = target.heads or source.heads
        return keep

    def roots(self) -> list[ChannelGroup]:
        return [self.groups[i] for i in range(len(self.parent)) if self.find(i) == i]


@dataclass(frozen=True)
class Cat:
    """A channel concatenation: the parts' channels one after the other."""

    parts: tuple[Ref, ...]


def parts_of(ref: Ref | Cat) -> tuple[Ref, ...]:
    return ref.parts if isinstance(ref, Cat) else (ref,)


def constrain_blocks(group: ChannelGroup, blocks: int, factor: int, name: str) -> None:
    if factor != 1:
        group.pinned_by.append(f"{name}: grouped conv over a strided channel layout")
    else:
        group.blocks = lcm(group.blocks, blocks)
    if group.size % group.blocks:
        group.pinned_by.append(f"{name}: {group.size} channels cannot be split into {group.blocks} equal blocks")


def expect_width(key: str, width: int, spaces: Spaces, ref: Ref, what: str) -> None:
    channels = spaces.group(ref.space).size * ref.factor
    if width != channels:
        raise SpecError(f"{key}: takes {width} {what}, but the layer before it (in spec order, or its 'prev') "
                        f"gives {channels}; check the order of 'layers' or add 'prev'")


def lcm(a: int, b: int) -> int:
    return a * b // gcd(a, b)
