"""Per-layer choice: how many channels a group keeps at a rate, and which ones.

``kept_count`` rounds a rate to a width (``round_to``, conv-group blocks, ``min_channels``);
``select_group`` keeps a group's top channels by its reduced score (CAC's ``union`` of every
member's own top channels for ``group_reduce: union``).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import floor, gcd

import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup
from ..criteria.base import Criterion
from ..formats.spec import Spec
from ..options import DEFAULT_GROUP_REDUCE, DEFAULT_MIN_CHANNELS, DEFAULT_RATE, DEFAULT_ROUND_MODE, DEFAULT_ROUND_TO
from .scoring import reduce_scores, score_groups


@dataclass(frozen=True)
class SelectOptions:
    rate: float = DEFAULT_RATE
    round_to: int = DEFAULT_ROUND_TO
    round_mode: str = DEFAULT_ROUND_MODE  # up, down or nearest: which aligned width a rate's width goes to
    min_channels: int = DEFAULT_MIN_CHANNELS
    group_reduce: str = DEFAULT_GROUP_REDUCE
    normalise: bool = True  # divide each member's scores by their mean (off for self-normalised criteria)
    sum_parts: bool = False  # the members' scores are parts of one score (the criterion's scores_are_parts)

    @classmethod
    def from_spec(cls, spec: Spec, criterion: Criterion, rate: float | None = None) -> SelectOptions:
        """The spec's values (options already applied to it), the defaults for what it leaves out;
        ``rate``: instead of the spec's (auto searches its own rates)."""
        return cls(rate=rate if rate is not None else spec.rate if spec.rate is not None else DEFAULT_RATE,
                   round_to=spec.round_to or DEFAULT_ROUND_TO, round_mode=spec.round_mode or DEFAULT_ROUND_MODE,
                   min_channels=spec.min_channels or DEFAULT_MIN_CHANNELS,
                   group_reduce=spec.group_reduce or DEFAULT_GROUP_REDUCE, normalise=not criterion.self_normalised,
                   sum_parts=criterion.scores_are_parts)


def channel_step(options: SelectOptions, blocks: int = 1, unit: int = 1) -> int:
    """Kept counts are multiples of this: ``round_to`` tensor indices and the conv-group count."""
    round_to = options.round_to // gcd(options.round_to, unit)
    return round_to * blocks // gcd(round_to, blocks)


def kept_count(size: int, rate: float, options: SelectOptions, blocks: int = 1, unit: int = 1) -> int:
    """Channels kept: ``size - floor(size * rate)``, aligned so the tensor width (channels times
    ``unit``, the indices one channel spans: an attention head's head_dim) is a multiple of
    ``round_to`` (and of the conv-group count), never below ``min_channels`` or 1, never above ``size``.

    ``round_mode``: ``up`` (keep more; the achieved rate is at most the asked one), ``down`` (keep
    fewer: 45 with round-to 8 -> 40), ``nearest`` (ties up). A rate that cuts nothing keeps the
    whole layer in every mode: aligning down is for widths being cut, not for layers left alone."""
    # the epsilon keeps 0.3 * 10 = 3.0000000000000004 from pruning one channel fewer
    keep = size - floor(size * rate + 1e-9)
    if keep >= size:
        return size
    keep = max(keep, options.min_channels, 1)
    step = channel_step(options, blocks, unit)
    least = -(-max(options.min_channels, 1) // step) * step  # the narrowest aligned width allowed
    return min(size, max(rounded_to_step(keep, step, options.round_mode), least))


def rounded_to_step(keep: int, step: int, mode: str) -> int:
    """``keep`` moved to a multiple of ``step``: up, down, or the nearest (ties up); may be 0 going down."""
    below, above = keep // step * step, -(-keep // step) * step
    if mode == "down":
        return below
    if mode == "nearest":
        return below if keep - below < above - keep else above
    return above


def top_indices(score: torch.Tensor, keep: int) -> torch.Tensor:
    """The ``keep`` highest-scoring indices, ties to the lower index, sorted ascending."""
    order = torch.argsort(-score, stable=True)
    return torch.sort(order[:keep]).values


def combined_scores(scores: list[torch.Tensor], options: SelectOptions) -> torch.Tensor:
    """One score per channel of a group (``union`` ranks by the mean where one ranking is needed)."""
    how = "mean" if options.group_reduce == "union" else options.group_reduce
    return reduce_scores(scores, how, options.normalise, options.sum_parts)


def aligned_at_most(size: int, width: int, options: SelectOptions, blocks: int = 1, unit: int = 1) -> int:
    """The widest width ``kept_count`` can give that is at most ``width`` (a multiple of the
    channel step, at least the narrowest allowed width); ``size`` itself when ``width >= size``."""
    if width >= size:
        return size
    step = channel_step(options, blocks, unit)
    least = kept_count(size, 0.999999, options, blocks, unit)
    return min(size, max(least, width // step * step))


def select_group(group: ChannelGroup, scores: list[torch.Tensor], rate: float, options: SelectOptions) -> torch.Tensor:
    """Kept channel indices (original numbering, ascending) for one group."""
    return select_width(group, scores, kept_count(group.size, rate, options, group.blocks, group.unit), options)


def select_width(group: ChannelGroup, scores: list[torch.Tensor], keep: int, options: SelectOptions) -> torch.Tensor:
    """The ``keep`` best channels of one group (``keep`` a width ``kept_count`` gives), ascending."""
    if keep >= group.size or not scores:
        return torch.arange(group.size)
    if group.blocks > 1:
        per_block = keep // group.blocks
        block = group.size // group.blocks
        combined = combined_scores(scores, options)
        return torch.cat([top_indices(combined[b * block:(b + 1) * block], per_block) + b * block
                          for b in range(group.blocks)])
    if options.group_reduce == "union" and not options.sum_parts:
        kept = torch.cat([top_indices(s, keep) for s in scores])
        return torch.unique(kept)  # sorted
    return top_indices(combined_scores(scores, options), keep)


def group_rate(group: ChannelGroup, default: float) -> float:
    """A layer's own rate wins; when coupled layers disagree, the smallest (safest) wins."""
    return min(group.rates) if group.rates else default


def select(groups: list[ChannelGroup], model: nn.Module, criterion: Criterion,
           options: SelectOptions, data=None, seed: int = 0) -> list[torch.Tensor | None]:
    """Kept indices per group (None for groups that are pinned and keep everything)."""
    scores = score_groups(groups, model, criterion, data, seed)
    return select_per_layer(groups, scores, lambda group: group_rate(group, options.rate), options)


def select_per_layer(groups: list[ChannelGroup], scores: list[list[torch.Tensor] | None], rate_of,
                     options: SelectOptions) -> list[torch.Tensor | None]:
    """Each prunable group keeps its own top channels at ``rate_of(group)``."""
    return [None if group_scores is None else select_group(group, group_scores, rate_of(group), options)
            for group, group_scores in zip(groups, scores)]
