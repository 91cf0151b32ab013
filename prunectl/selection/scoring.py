"""Scoring channel groups with a criterion: every scored member's scores, on the same channels.

Group score (Torch-Pruning's default, and the natural reading of "aggregate"): every scored
member's scores are divided by their mean, so a layer with large weights does not dominate,
then reduced over members (mean, sum or max); ``per_layer.select_group`` turns them into kept
channels (or, for ``union``, CAC's union of each member's own top channels).
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import replace

import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup, Member
from ..criteria.base import Consumer, Criterion, LayerView
from ..errors import SpecError
from ..layers import kinds as L
from ..loading.data import CalibrationData
from ..models.device import is_cpu, on_device, to_device


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
        first_scored = next((m.module for m in group.members if m.scored), None)
        for position, member in enumerate(group.members):
            if not member.scored:
                continue
            after = group.members[position + 1] if position + 1 < len(group.members) else None
            # a norm over a concatenation (DenseNet's next norm1, Swin's patch merging) holds more
            # channels than this layer's: not its norm
            norm = _norm_member(group, after, modules[member.module], modules)
            reached = norm or _norm_through_depthwise(group, position, modules)
            views[member.module] = LayerView(member.module, modules[member.module],
                                             modules[norm] if norm else None, norm, consumers, seed,
                                             group.parts(member.module), member.module == first_scored,
                                             modules[reached] if reached else None, reached)
    return views


def _norm_through_depthwise(group: ChannelGroup, position: int, modules: dict[str, nn.Module]) -> str | None:
    """The norm a member's channels reach past depthwise convs: members are appended in spec order,
    a depthwise conv as its input then its output (one for one, times its multiplier), so
    pointwise -> depthwise -> BatchNorm reads [pw out, dw in, dw out, bn out]. Anything else
    between them (another reader, a summed producer) and no norm is reached."""
    producer = modules[group.members[position].module]
    index = position + 1
    while index + 1 < len(group.members):
        member, following = group.members[index], group.members[index + 1]
        if not (member.side == "in" and following.side == "out" and member.module == following.module
                and L.is_depthwise(modules[member.module])):
            return None
        index += 2
        norm = _norm_member(group, group.members[index] if index < len(group.members) else None, producer, modules)
        if norm is not None:
            return norm
    return None


def _norm_member(group: ChannelGroup, member: Member | None, producer: nn.Module,
                 modules: dict[str, nn.Module]) -> str | None:
    """``member``'s module when it is a norm over the producer's channels, one scale per channel
    (its output side, at offset 0, as wide as the group); else None."""
    if (member is not None and member.side == "out" and member.offset == 0
            and _is_next_norm(modules.get(member.module), producer)
            and L.out_width(modules[member.module]) == group.size * member.factor):
        return member.module
    return None


def _is_next_norm(module: nn.Module | None, producer: nn.Module) -> bool:
    """A norm with a scale per channel, laid out like its producer's output (a LayerNorm after a
    permuted conv holds channels last, where observing criteria would look for them at dim 1)."""
    return (module is not None and L.kind_of(module) == "norm" and not isinstance(module, nn.PReLU)
            and L.channel_dim(module, 4) == L.channel_dim(producer, 4))


def score_groups(groups: list[ChannelGroup], model: nn.Module, criterion: Criterion, data=None,
                 seed: int = 0, device: torch.device | None = None) -> list[list[torch.Tensor] | None]:
    """Member scores per group (None for pinned groups); data-driven criteria get ``data`` first.

    ``device`` (``--device``): a data-driven criterion's pass over the data, and its ``score``
    calls, run with the model and the batches there (the model comes back to where it was);
    the scores come back to the CPU in float64. Data-free criteria read the weights where they are."""
    if criterion.needs_data and data is None:
        raise SpecError(f"criterion {criterion.name!r} needs data: pass --data FILE.pt|FILE.npz "
                        "(inputs, optional targets) or --data TASK (an installed task plugin)")
    if criterion.needs_data:
        _pin_attention_heads(groups, model, criterion)
    views = layer_views(groups, model, seed)
    moved = criterion.needs_data and not is_cpu(device)
    with on_device(model, device) if moved else nullcontext():
        criterion.prepare(model, list(views.values()), data_on(data, device) if moved else data)
        scores = [member_scores(group, model, criterion, views) if group.prunable else None for group in groups]
    unscored = [group for group, group_scores in zip(groups, scores) if group_scores is not None and not group_scores]
    for group in unscored:
        group.pinned_by.append(f"{group.name}: criterion {criterion.name!r}: {criterion.unscored_reason}")
    if unscored:  # not an error: the rest of the model is pruned, these keep every channel
        warnings.warn(f"criterion {criterion.name!r} leaves {len(unscored)} group(s) unpruned, "
                      f"{criterion.unscored_reason}: {', '.join(g.name for g in unscored)}", stacklevel=2)
    return [group_scores or None for group_scores in scores]


def data_on(data: CalibrationData | None, device: torch.device | None) -> CalibrationData | None:
    """The calibration batches on ``device`` (their loss, source and details unchanged)."""
    if data is None or is_cpu(device):
        return data
    return replace(data, batches=tuple((to_device(x, device), to_device(y, device)) for x, y in data.batches))


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
        if raw is None:  # nothing to score this layer by: the group's other layers decide
            continue
        expected = group.size * member.factor
        parts = group.parts(member.module)
        blocks = group.part_members(member.module)
        if parts > 1 and isinstance(raw, torch.Tensor) and raw.shape == (parts * expected,):
            raw = raw.view(parts, expected).sum(0)  # observed per q/k/v output: a head's channel sums them
        elif len(blocks) > 1 and isinstance(raw, torch.Tensor) and \
                raw.shape == (sum(group.size * block.factor for block in blocks),):
            # blocks of different widths (a grouped q, k, v): a channel sums its rows in every block,
            # spread over this member's span so that the sum below gives that total per channel
            total = sum(raw[block.offset:block.offset + group.size * block.factor].reshape(group.size, block.factor)
                        .sum(1) for block in blocks)
            raw = (total / member.factor).repeat_interleave(member.factor)
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


def reduce_scores(scores: list[torch.Tensor], how: str, normalise: bool = True,
                  sum_parts: bool = False) -> torch.Tensor:
    """One score per channel of a group from its members' scores: each normalised by its mean and
    combined by ``how``; or, when they are parts of one score (``sum_parts``), their sum, normalised."""
    if sum_parts:
        total = torch.stack(scores).sum(0)
        return total / total.mean() if normalise and float(total.mean()) > 0 else total
    normalised = [s / s.mean() if normalise and float(s.mean()) > 0 else s for s in scores]
    stacked = torch.stack(normalised)
    if how == "sum":
        return stacked.sum(0)
    if how == "max":
        return stacked.max(0).values
    return stacked.mean(0)
