"""Scoring groups with a criterion and choosing the channels each group keeps.

Group score (Torch-Pruning's default, and the natural reading of "aggregate"): every scored
member's scores are divided by their mean, so a layer with large weights does not dominate,
then reduced over members (mean, sum or max). ``union`` instead keeps, per member, its own
top channels and takes the union of those sets: CAC's rule for residual groups.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import floor, gcd

import torch
import torch.nn as nn

from . import layers as L
from .criteria.base import Consumer, Criterion, LayerView
from .errors import SpecError
from .groups import ChannelGroup


@dataclass(frozen=True)
class SelectOptions:
    rate: float = 0.5
    round_to: int = 1
    min_channels: int = 1
    group_reduce: str = "mean"
    normalise: bool = True  # divide each member's scores by their mean (off for self-normalised criteria)


def layer_views(groups: list[ChannelGroup], model: nn.Module, seed: int = 0) -> dict[str, LayerView]:
    """A LayerView for every scored member of every prunable group: its norm (the member
    listed right after it, if a norm), the group's readers and the seed."""
    modules = dict(model.named_modules())
    views: dict[str, LayerView] = {}
    for group in groups:
        if not group.prunable:
            continue
        consumers = tuple(Consumer(m.module, modules[m.module], m.factor, m.offset, group.size)
                          for m in group.members if m.side == "in")
        for position, member in enumerate(group.members):
            if not member.scored:
                continue
            after = group.members[position + 1] if position + 1 < len(group.members) else None
            # a norm over a concatenation (DenseNet's next norm1, Swin's patch merging) holds more
            # channels than this layer's: not its norm
            norm = after.module if (after is not None and after.side == "out" and after.offset == 0
                                    and _is_next_norm(modules.get(after.module), modules[member.module])
                                    and L.out_width(modules[after.module]) == group.size * after.factor) else None
            views[member.module] = LayerView(member.module, modules[member.module],
                                             modules[norm] if norm else None, norm, consumers, seed,
                                             group.parts(member.module))
    return views


def _is_next_norm(module: nn.Module | None, producer: nn.Module) -> bool:
    """A norm with a scale per channel, laid out like its producer's output (a LayerNorm after a
    permuted conv holds channels last, where observing criteria would look for them at dim 1)."""
    return (module is not None and L.kind_of(module) == "norm" and not isinstance(module, nn.PReLU)
            and L.channel_dim(module, 4) == L.channel_dim(producer, 4))


def score_groups(groups: list[ChannelGroup], model: nn.Module, criterion: Criterion, data=None,
                 seed: int = 0) -> list[list[torch.Tensor] | None]:
    """Member scores per group (None for pinned groups); data-driven criteria get ``data`` first."""
    if criterion.needs_data and data is None:
        raise SpecError(f"criterion {criterion.name!r} needs data: pass --data FILE.pt|FILE.npz "
                        "(inputs, optional targets) or --data TASK (an installed task plugin)")
    if criterion.needs_data:
        _pin_attention_heads(groups, model, criterion)
    views = layer_views(groups, model, seed)
    criterion.prepare(model, list(views.values()), data)
    return [member_scores(group, model, criterion, views) if group.prunable else None for group in groups]


def _pin_attention_heads(groups: list[ChannelGroup], model: nn.Module, criterion: Criterion) -> None:
    """Data-driven criteria observe a layer's outputs or its readers' inputs; an attention's heads
    are neither a module output nor (in nn.MultiheadAttention's fused forward) out_proj's call."""
    modules = dict(model.named_modules())
    for group in groups:
        heads = [m.module for m in group.members if m.scored and L.kind_of(modules[m.module]) == "attention"]
        if heads and group.prunable:
            group.pinned_by.append(f"{heads[0]}: criterion {criterion.name!r} observes activations, which attention "
                                   "heads do not expose; weight criteria (l1, l2, fpgm, lamp, group_l1) prune heads")


def member_scores(group: ChannelGroup, model: nn.Module, criterion: Criterion,
                  views: dict[str, LayerView] | None = None) -> list[torch.Tensor]:
    """One score tensor of length ``group.size`` per scored member, in float64."""
    modules = dict(model.named_modules()) if views is None else {}
    scores = []
    for member in group.members:
        if not member.scored:
            continue
        view = views[member.module] if views is not None else LayerView(member.module, modules[member.module],
                                                                        parts=group.parts(member.module))
        raw = criterion.score(view)
        expected = group.size * member.factor
        parts = group.parts(member.module)
        if parts > 1 and isinstance(raw, torch.Tensor) and raw.shape == (parts * expected,):
            raw = raw.view(parts, expected).sum(0)  # observed per q/k/v output: a head's channel sums them
        if not isinstance(raw, torch.Tensor) or raw.shape != (expected,):
            shape = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
            raise SpecError(f"criterion {criterion.name!r} returned {shape} for {member.module!r}; "
                            f"expected one score per output channel ({expected},)")
        raw = raw.detach().double().cpu()
        if not bool(torch.isfinite(raw).all()):
            raise SpecError(f"criterion {criterion.name!r} gave NaN/inf scores for {member.module!r}")
        # a depthwise multiplier gives `factor` outputs per group channel: they go together
        scores.append(raw.view(group.size, member.factor).sum(dim=1))
    return scores


def reduce_scores(scores: list[torch.Tensor], how: str, normalise: bool = True) -> torch.Tensor:
    normalised = [s / s.mean() if normalise and float(s.mean()) > 0 else s for s in scores]
    stacked = torch.stack(normalised)
    if how == "sum":
        return stacked.sum(0)
    if how == "max":
        return stacked.max(0).values
    return stacked.mean(0)


def channel_step(options: SelectOptions, blocks: int = 1, unit: int = 1) -> int:
    """Kept counts are multiples of this: ``round_to`` tensor indices and the conv-group count."""
    round_to = options.round_to // gcd(options.round_to, unit)
    return round_to * blocks // gcd(round_to, blocks)


def kept_count(size: int, rate: float, options: SelectOptions, blocks: int = 1, unit: int = 1) -> int:
    """Channels kept: ``size - floor(size * rate)``, rounded up so the tensor width (channels
    times ``unit``, the indices one channel spans: an attention head's head_dim) is a multiple of
    ``round_to`` (and to the conv-group count), never below ``min_channels`` or 1, never above ``size``."""
    # the epsilon keeps 0.3 * 10 = 3.0000000000000004 from pruning one channel fewer
    keep = size - floor(size * rate + 1e-9)
    keep = max(keep, options.min_channels, 1)
    step = channel_step(options, blocks, unit)
    keep = -(-keep // step) * step
    if keep > size:
        keep = size
    return keep


def top_indices(score: torch.Tensor, keep: int) -> torch.Tensor:
    """The ``keep`` highest-scoring indices, ties to the lower index, sorted ascending."""
    order = torch.argsort(-score, stable=True)
    return torch.sort(order[:keep]).values


def select_group(group: ChannelGroup, scores: list[torch.Tensor], rate: float, options: SelectOptions) -> torch.Tensor:
    """Kept channel indices (original numbering, ascending) for one group."""
    keep = kept_count(group.size, rate, options, group.blocks, group.unit)
    if keep >= group.size or not scores:
        return torch.arange(group.size)
    if group.blocks > 1:
        per_block = keep // group.blocks
        block = group.size // group.blocks
        combined = reduce_scores(scores, "mean" if options.group_reduce == "union" else options.group_reduce,
                                 options.normalise)
        return torch.cat([top_indices(combined[b * block:(b + 1) * block], per_block) + b * block
                          for b in range(group.blocks)])
    if options.group_reduce == "union":
        kept = torch.cat([top_indices(s, keep) for s in scores])
        return torch.unique(kept)  # sorted
    return top_indices(reduce_scores(scores, options.group_reduce, options.normalise), keep)


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
