"""From kept channels per group to kept indices per module tensor dimension.

A plan is plain data: for every module touched, the indices its output and/or input
dimension keeps, already expanded by the member's factor (flatten, depthwise multiplier).
Masking and surgery both consume it, so the soft and the hard model cut the same channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..coupling.channel_spaces import ChannelGroup


@dataclass
class ModuleCut:
    out: torch.Tensor | None = None  # kept output indices
    inp: torch.Tensor | None = None  # kept input indices
    axis: int | None = None  # a parameter entry: ``out`` indexes this axis of the parameter
    count: bool = False  # an attribute entry: the attribute becomes ``len(out)``


def expand(kept: torch.Tensor, factor: int) -> torch.Tensor:
    """Channel c spans indices [c*factor, (c+1)*factor)."""
    if factor == 1:
        return kept
    return (kept[:, None] * factor + torch.arange(factor)[None, :]).flatten()


def make_plan(groups: list[ChannelGroup], kept: list[torch.Tensor | None]) -> dict[str, ModuleCut]:
    # A dimension made of several groups (a concatenation) keeps, per group at its offset, the
    # group's kept channels, or all of them when that group is not pruned.
    parts: dict[tuple[str, str], list[tuple[int, torch.Tensor]]] = {}
    pruned: set[tuple[str, str]] = set()
    axes: dict[str, int] = {}
    counts: set[str] = set()
    for group, indices in zip(groups, kept):
        whole = indices is None or len(indices) == group.size
        for member in group.members:
            key = (member.module, member.side)
            if member.axis is not None:
                axes[member.module] = member.axis
            if member.count:
                counts.add(member.module)
            channels = torch.arange(group.size) if whole else indices
            parts.setdefault(key, []).append((member.offset, expand(channels, member.factor)))
            if not whole:
                pruned.add(key)
    plan: dict[str, ModuleCut] = {}
    for (module, side), items in parts.items():
        if (module, side) not in pruned:
            continue
        index = torch.cat([offset + local for offset, local in sorted(items, key=lambda item: item[0])])
        cut = plan.setdefault(module, ModuleCut(axis=axes.get(module), count=module in counts))
        if side == "out":
            cut.out = index
        else:
            cut.inp = index
    return plan


def kept_by_layer(plan: dict[str, ModuleCut]) -> dict[str, list[int]]:
    """The manifest's ``kept``: output indices kept per pruned layer, original numbering (parameter
    entries follow a layer's channels and are left out: ``resize`` records their shapes)."""
    return {name: cut.out.tolist() for name, cut in plan.items() if cut.out is not None and cut.axis is None
            and not cut.count}


def compose(previous: dict[str, list[int]], current: dict[str, list[int]]) -> dict[str, list[int]]:
    """Kept indices of a second pruning, mapped back to the numbering before the first."""
    out = dict(previous)
    for name, indices in current.items():
        base = previous.get(name)
        out[name] = [base[i] for i in indices] if base is not None else list(indices)
    return out
