"""Widths a stock Hugging Face config can hold: the hidden width a multiple of the query heads.

transformers 5 validates ``hidden_size % num_attention_heads == 0`` for Llama (SmolLM2), Gemma 2/3,
GPT-NeoX and some forty other configs, even when ``head_dim`` is given. Widths chosen apart
(the hidden channels at one rate, whole KV groups at another) would often break it: 72 hidden
channels with 9 query heads on 3 KV heads, cut at 0.5 with round-to 8, keep 40 hidden channels
and 6 query heads, and no stock config holds that. So where the model's config class refuses
such widths, the hidden width is aligned once every group has its kept count: to a multiple of
the kept query heads of every attention (and of round-to), in the direction of --round-mode,
keeping its best channels. Where the hidden width is pinned the bundle still proves and
reloads; it only gets no hf/ folder, with the reason (bundle/hf_folder.py).

Some modeling code reads ``hidden_size`` as a number, not as a width: Gemma 2/3 scale the
embeddings by ``sqrt(hidden_size)`` (the buffer ``embed_scale``). A stock config with the cut width
would rescale them, and no weight change compensates bit for bit (the embedding is tied to the
lm_head, which would then compute other logits). There the hidden width is kept whole
(``pin_value_hidden``) and the report's ``selection.aligned`` says why; heads and MLP are cut.

GPT-2's config has no head size: ``head_dim = n_embd // n_head`` and the attention is as wide as the
residual stream (``c_attn = Conv1D(3 * n_embd, n_embd)``). A stock config then holds cut heads only
with the hidden width equal to the kept heads times head_dim, the same head count in every layer
(``TiedAttention``): every attention keeps the most heads any layer keeps, and the hidden width
becomes that many heads' width, its best channels (a whole hidden width keeps every head). Decoders
only: an encoder's rates are compared channel for channel with Torch-Pruning's (BERT keeps its
documented behaviour: cut heads, no ``hf/``).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import lcm

import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup
from ..layers import kinds as L
from ..loading.meta import meta_build
from .per_layer import SelectOptions, channel_step, rounded_to_step, select_width
from .structures import input_embedding


@dataclass(frozen=True)
class HeadsMultiple:
    """The group at ``hidden`` keeps a multiple of the query heads the groups in ``heads`` keep
    (``(group index, query heads per channel)``: a KV group of g query heads counts g)."""

    hidden: int
    heads: tuple[tuple[int, int], ...]

    def multiple(self, kept: list[torch.Tensor | None], groups: list[ChannelGroup]) -> int:
        counts = [(groups[i].size if kept[i] is None else len(kept[i])) * per for i, per in self.heads]
        return lcm(*counts) if counts else 1


@dataclass(frozen=True)
class TiedAttention:
    """The attentions' widths follow the hidden width (GPT-2): the groups at ``heads`` keep one
    head count k and the group at ``hidden`` keeps ``k * head_dim`` channels."""

    hidden: int
    heads: tuple[int, ...]
    head_dim: int


@dataclass(frozen=True)
class StockWidths:
    """What a stock config asks of the kept widths (either may be None)."""

    multiple: HeadsMultiple | None
    tied: TiedAttention | None


def stock_widths(groups: list[ChannelGroup], model: nn.Module) -> StockWidths:
    return StockWidths(heads_multiple(groups, model), tied_attention(groups, model))


def tied_attention(groups: list[ChannelGroup], model: nn.Module) -> TiedAttention | None:
    """The tie of GPT-2-like decoders (a build with twice the hidden size, head_dim given, has wider
    head projections), or None."""
    config = getattr(model, "config", None)
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    generates = getattr(model, "can_generate", None)
    if not (isinstance(hidden, int) and isinstance(heads, int) and callable(generates) and generates()):
        return None
    name = input_embedding(model)
    hidden_index = next((i for i, group in enumerate(groups) if any(
        member.module == name and member.side == "out" for member in group.members)), None)
    head_groups = tuple(i for i, group in enumerate(groups) if group.heads)
    units = {groups[i].unit for i in head_groups}
    if hidden_index is None or not head_groups or len(units) != 1 or \
            groups[hidden_index].size != heads * next(iter(units)):
        return None
    key = type(config).attribute_map.get("hidden_size", "hidden_size")
    fields = {**config.to_dict(), key: 2 * hidden}
    fields.setdefault("head_dim", getattr(config, "head_dim", None) or hidden // heads)
    try:
        wider_config = type(config).from_dict(fields)
    except Exception:  # transformers raises its own validation error types
        return None
    wider = meta_build(lambda: type(model)(wider_config))
    if wider is None:
        return None
    producers = {member.module for i in head_groups for member in groups[i].members
                 if member.side == "out" and not member.count and member.axis is None}
    own, built = dict(model.named_modules()), dict(wider.named_modules())
    if all(name in built and L.out_width(built[name]) == L.out_width(own[name]) for name in producers):
        return None
    return TiedAttention(hidden_index, head_groups, next(iter(units)))


def _one_shared_count(kept: list[torch.Tensor | None], groups: list[ChannelGroup], scores: list,
                      options: SelectOptions, notes: list[str] | None) -> list[torch.Tensor | None]:
    """Groups whose kept count one field of the shared config holds (Phi-3 slices q at
    ``config.num_attention_heads * head_dim`` in every layer) keep one count: the most any keeps,
    every channel where one of them is pinned."""
    fields: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        for member in group.members:
            if member.count and ".config." in member.module:
                fields.setdefault(member.module.rpartition(".config.")[2], []).append(index)
    out = list(kept)
    for field, indices in sorted(fields.items()):
        counts = {groups[i].size if out[i] is None else len(out[i]) for i in indices}
        if len(counts) <= 1:
            continue
        count = max(groups[i].size for i in indices) if any(out[i] is None for i in indices) else max(counts)
        for i in indices:
            if out[i] is not None and len(out[i]) != count:
                out[i] = select_width(groups[i], scores[i], count, options)
        if notes is not None:
            notes.append(f"{groups[indices[0]].name} and {len(indices) - 1} more: {count} channels each (one "
                         f"config field, {field}, holds their kept count in every layer)")
    return out


def _tied_widths(kept: list[torch.Tensor | None], groups: list[ChannelGroup], scores: list, tied: TiedAttention,
                 options: SelectOptions, notes: list[str] | None) -> list[torch.Tensor | None]:
    sizes = {groups[i].size for i in tied.heads}
    hidden = groups[tied.hidden]
    if len(sizes) != 1:
        return kept
    counts = [len(kept[i]) for i in tied.heads if kept[i] is not None]
    # a hidden width kept whole (pinned, or --rate-hidden 0) keeps every head, and the other way round
    whole = kept[tied.hidden] is None or len(kept[tied.hidden]) == hidden.size or len(counts) < len(tied.heads)
    heads = next(iter(sizes)) if whole or not counts else max(counts)
    width = min(heads * tied.head_dim, hidden.size)
    out = list(kept)
    moved = [i for i in tied.heads if kept[i] is not None and len(kept[i]) != heads]
    for i in moved:
        out[i] = select_width(groups[i], scores[i], heads, options)
    hidden_kept = hidden.size if kept[tied.hidden] is None else len(kept[tied.hidden])
    if kept[tied.hidden] is not None and hidden_kept != width:
        out[tied.hidden] = select_width(hidden, scores[tied.hidden], width, options)
    if notes is not None and (heads < next(iter(sizes)) or moved or hidden_kept != width):
        shown = f"{hidden_kept} -> {width}" if hidden_kept != width else f"{width}"
        notes.append(f"{hidden.name}: hidden width {shown} = {heads} heads x head_dim {tied.head_dim}, {heads} heads "
                     "in every attention (the config derives head_dim from the hidden size over the head count)")
    return out


def heads_multiple(groups: list[ChannelGroup], model: nn.Module) -> HeadsMultiple | None:
    """The alignment ``model``'s config class demands, or None (not such a config, or no cut hidden width)."""
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if not (isinstance(heads, int) and isinstance(hidden, int)) or not _validates_heads(config, hidden, heads):
        return None
    name = input_embedding(model)
    hidden_index = next((i for i, group in enumerate(groups) if any(
        member.module == name and member.side == "out" for member in group.members)), None)
    if hidden_index is None:
        return None
    per_heads = []
    for index, group in enumerate(groups):
        if group.heads and group.prunable:
            spans = [member.factor for member in group.members if member.side == "out" and not member.count]
            per_heads.append((index, max(spans) // group.unit if spans else 1))
    return HeadsMultiple(hidden_index, tuple(per_heads))


def aligned(kept: list[torch.Tensor | None], groups: list[ChannelGroup], scores: list,
            widths: StockWidths, options: SelectOptions, notes: list[str] | None = None
            ) -> list[torch.Tensor | None]:
    """``kept`` with the hidden group's width moved to the nearest allowed multiple (``round_mode``),
    or to the kept heads' width where the attention follows it; what was moved is appended to
    ``notes`` (the report's ``selection.aligned``)."""
    kept = _one_shared_count(kept, groups, scores, options, notes)
    if widths.tied is not None:
        return _tied_widths(kept, groups, scores, widths.tied, options, notes)
    alignment = widths.multiple
    index = None if alignment is None else alignment.hidden
    if index is not None and (kept[index] is None or not groups[index].prunable):
        return _heads_dividing(kept, groups, scores, alignment, options, notes)
    if index is None or kept[index] is None or scores[index] is None:
        return kept
    group = groups[index]
    step = lcm(channel_step(options, group.blocks, group.unit), alignment.multiple(kept, groups))
    keep = len(kept[index])
    # never below one step: a width rounded down to 0 goes up instead
    width = min(rounded_to_step(keep, step, options.round_mode) or -(-keep // step) * step, group.size)
    if width == keep:
        return kept
    if notes is not None:
        notes.append(f"{group.name}: {keep} -> {width} channels, a multiple of {step} (round-to and the kept "
                     "query heads: the config requires hidden_size to be a multiple of num_attention_heads)")
    return [select_width(group, scores[index], width, options) if i == index else k for i, k in enumerate(kept)]


def _heads_dividing(kept: list[torch.Tensor | None], groups: list[ChannelGroup], scores: list,
                    alignment: HeadsMultiple, options: SelectOptions, notes: list[str] | None
                    ) -> list[torch.Tensor | None]:
    """The hidden width stays whole (Gemma's, pinned): each attention's kept query heads move instead,
    to the nearest count (``round_mode``) that divides it (128 hidden channels, 8 query heads on 4 KV
    heads cut at 0.3: 3 KV groups are 6 query heads, which 128 is no multiple of; 4 groups are kept)."""
    hidden = groups[alignment.hidden].size
    out = list(kept)
    moves: dict[tuple[int, int, int], list[str]] = {}
    for index, per in alignment.heads:
        group = groups[index]
        if kept[index] is None or scores[index] is None:
            continue
        keep = len(kept[index])
        fits = [count for count in range(1, group.size + 1) if hidden % (count * per) == 0]
        if not fits or keep in fits:
            continue
        above = [count for count in fits if count > keep]
        below = [count for count in fits if count < keep]
        if options.round_mode == "down" and below or not above:
            count = below[-1]
        elif options.round_mode == "nearest" and below and keep - below[-1] < above[0] - keep:
            count = below[-1]
        else:
            count = above[0]
        out[index] = select_width(group, scores[index], count, options)
        moves.setdefault((keep, count, per), []).append(group.name)
    for (keep, count, per), names in moves.items():
        if notes is not None:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            notes.append(f"{names[0]}{more}: {keep} -> {count} KV groups ({count * per} query heads: the config "
                         f"requires hidden_size, kept whole at {hidden}, to be a multiple of num_attention_heads)")
    return out


def hidden_size_as_value(model: nn.Module) -> str | None:
    """The buffer whose value (not shape) a build with another ``hidden_size`` changes (Gemma's
    ``embed_scale``), or None: then a stock config can hold a cut hidden width."""
    config = getattr(model, "config", None)
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if not (isinstance(hidden, int) and isinstance(heads, int)) or input_embedding(model) is None:
        return None
    # twice the width keeps every divisibility rule; head_dim explicit so RoPE's buffers stay as they are
    fields = {**config.to_dict(), "hidden_size": 2 * hidden}
    fields.setdefault("head_dim", getattr(config, "head_dim", None) or hidden // heads)
    try:
        variant_config = type(config).from_dict(fields)
    except Exception:  # transformers raises its own validation error types
        return None
    variant = meta_build(lambda: type(model)(variant_config), real_buffers=True)
    if variant is None:
        return None
    own = dict(model.named_buffers())
    for name, buffer in variant.named_buffers():
        other = own.get(name)
        if other is not None and other.shape == buffer.shape and not (buffer.is_meta or other.is_meta) \
                and not torch.equal(buffer, other.to(buffer.dtype)):
            return name
    return None


def pin_value_hidden(groups: list[ChannelGroup], model: nn.Module, buffer: str | None) -> str | None:
    """Pin the hidden group when ``buffer`` (``hidden_size_as_value``) holds the hidden size as a
    value; the note the report gives (None: nothing pinned)."""
    name = input_embedding(model)
    group = next((g for g in groups if g.prunable and any(m.module == name and m.side == "out" for m in g.members)),
                 None) if buffer is not None else None
    if group is None:
        return None
    why = (f"{type(model).__name__} reads hidden_size as a value ({buffer} = f(hidden_size)), so a stock "
           "config cannot hold a cut hidden width")
    group.pinned_by.append(f"{name}: {why}")
    return f"{name}: hidden width kept whole ({why})"


def _validates_heads(config: object, hidden: int, heads: int) -> bool:
    """Whether the config class refuses a hidden size that is not a multiple of the head count."""
    fields = {**config.to_dict(), "hidden_size": hidden * heads + 1}
    fields.setdefault("head_dim", getattr(config, "head_dim", None) or hidden // heads)
    try:
        type(config).from_dict(fields)
    except Exception:  # transformers raises its own validation error types
        return True
    return False


__all__ = ["HeadsMultiple", "StockWidths", "TiedAttention", "aligned", "heads_multiple", "stock_widths",
           "tied_attention", "hidden_size_as_value", "pin_value_hidden"]
