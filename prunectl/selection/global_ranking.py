"""Global ranking: cut the lowest-scoring channels of the whole model, not a rate per layer.

Every group's scores are normalised (each member's scores divided by their mean, as for
per-layer selection) so that a layer with large weights cannot hide the channels of a layer
with small ones, and no group is taken below its floor (``--min-channels``, at least 1,
rounded up to ``--round-to`` and the conv-group count). Ties go to the earlier group, then
the lower channel index, so the result is deterministic.
"""
from __future__ import annotations

import torch

from ..coupling.channel_spaces import ChannelGroup
from .per_layer import SelectOptions, channel_step, combined_scores, select_group


def floor_of(group: ChannelGroup, options: SelectOptions) -> int:
    """The fewest channels a group may keep."""
    step = channel_step(options, group.blocks, group.unit)
    return min(group.size, -(-max(options.min_channels, 1) // step) * step)


def prunable_channels(groups: list[ChannelGroup]) -> int:
    return sum(group.size for group in groups if group.prunable)


def global_select(groups: list[ChannelGroup], scores: list[list[torch.Tensor] | None], remove: int,
                  options: SelectOptions) -> list[torch.Tensor | None]:
    """Kept indices per group after removing about ``remove`` lowest-ranked channels in total
    (fewer when floors or rounding forbid more)."""
    candidates: list[tuple[float, int, int]] = []
    for index, (_group, group_scores) in enumerate(zip(groups, scores)):
        if group_scores:
            combined = combined_scores(group_scores, options)
            candidates += [(float(value), index, channel) for channel, value in enumerate(combined)]
    candidates.sort()
    removed = [0] * len(groups)
    floors = [floor_of(group, options) for group in groups]
    total = 0
    for _, index, _ in candidates:
        if total >= remove:
            break
        if groups[index].size - removed[index] > floors[index]:
            removed[index] += 1
            total += 1
    kept: list[torch.Tensor | None] = []
    for group, group_scores, count in zip(groups, scores, removed):
        if group_scores is None:
            kept.append(None)
        elif not group_scores:
            kept.append(torch.arange(group.size))
        else:
            # as a rate, so select_group applies the same rounding and block rules as per-layer mode
            kept.append(select_group(group, group_scores, count / group.size, options))
    return kept


def remove_more(groups: list[ChannelGroup], scores: list[list[torch.Tensor] | None],
                kept: list[torch.Tensor | None], extra: int, options: SelectOptions) -> list[torch.Tensor | None]:
    """``kept`` minus the ``extra`` lowest-ranked kept channels of the whole model, floors
    respected (groups with conv-group blocks are left as they are)."""
    candidates: list[tuple[float, int, int]] = []
    for index, (group, group_scores, indices) in enumerate(zip(groups, scores, kept)):
        if group_scores and indices is not None and group.blocks == 1:
            combined = combined_scores(group_scores, options)
            candidates += [(float(combined[c]), index, int(c)) for c in indices]
    candidates.sort()
    dropped: dict[int, set[int]] = {}
    total = 0
    for _, index, channel in candidates:
        if total >= extra:
            break
        if len(kept[index]) - len(dropped.get(index, ())) > floor_of(groups[index], options):
            dropped.setdefault(index, set()).add(channel)
            total += 1
    return [indices if index not in dropped else
            torch.tensor([c for c in indices.tolist() if c not in dropped[index]], dtype=indices.dtype)
            for index, indices in enumerate(kept)]
