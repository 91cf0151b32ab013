"""Constructor args no spec names, brought up to date with the pruned widths.

A bundle records its widths in ``rebuild.args`` where the spec names the arg (``layers.fc1.arg``).
Pruned again without a spec (traced), or from a checkpoint whose ``model.args`` give widths the
spec does not name, those args would still hold the old widths and only ``resize`` the new ones:
``prunectl.load`` gets it right, but a CAC-style ``Class(**rebuild.args)`` with a strict load does
not. So each such int arg is probed on the meta device (no memory, no init): the layer widths
that follow it (one for one, or ``head_dim`` each for a head count) are found by building with ``arg + 1``
(or ``2 * arg``), and the arg takes the value that gives the pruned widths when a build with it
reproduces every one of them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..layers import kinds as L
from ..layers.params import count_attributes
from ..loading.meta import meta_model

# config fields transformers computes from others when they are absent (hf: factories only), and the
# value an absent one means where neither the config nor the modules hold it (None: no such rule);
# GPT-2's n_inner None is 4 * n_embd (GPT2MLP)
_DERIVED_FIELDS = {"head_dim": None, "n_inner": lambda config: 4 * config.n_embd}


def _widths(model: nn.Module) -> dict[tuple[str, str], int]:
    return {(name, attr): value for name, module in model.named_modules() if L.kind_of(module) != "other"
            for attr, value in L.shape_attrs(module).items() if isinstance(value, int)}


def probed_args(factory: str, args: dict[str, Any], built: nn.Module, hard: nn.Module,
                named: set[str]) -> dict[str, Any]:
    """``args`` with every unnamed int arg set to the width it controls in ``hard`` (``built``: the
    model ``args`` build, on the meta device or not)."""
    target, current = _widths(hard), _widths(built)
    if all(target.get(key) == value for key, value in current.items()):
        return args  # nothing stale: the common case costs one comparison
    explicit = _derived_made_explicit(factory, args, built)
    updated, built_now = {**args, **explicit}, built
    # passes until nothing moves: one arg may fit only once another has (Llama's hidden_size must be
    # a multiple of num_attention_heads, which comes after it)
    # (a field only a rule derives, GPT-2's n_inner, is probed like a given arg once made explicit)
    probed = {**args, **{key: value for key, value in explicit.items() if _DERIVED_FIELDS[key] is not None}}
    pending = [key for key, value in probed.items()
               if key not in named and not isinstance(value, bool) and isinstance(value, int) and value >= 1]
    progress = True
    while pending and progress:
        progress = False
        for key in list(pending):
            moved_to = _moved(factory, key, probed[key], updated, built_now, current, target)
            if moved_to is not None:
                width, candidate = moved_to
                updated[key], current, built_now = width, _widths(candidate), candidate
                pending.remove(key)
                progress = True
    if pending and any(target.get(where) != width for where, width in current.items()):
        updated, built_now = _moved_together(factory, pending, updated, built_now, current, target, hard)
    updated, built_now = _heads_for_head_dim(factory, updated, built_now, hard)
    # a derived field stays explicit once any arg moved (issue 17: the config says head_dim
    # outright, so a later cut of hidden_size or the head counts cannot change it), and only
    # where the build with it is the one proven here
    moved_any = any(updated[key] != value for key, value in args.items())
    for key in explicit:
        without = {k: v for k, v in updated.items() if k != key}
        alone = meta_model(factory, without) if not moved_any else None
        if not moved_any and alone is not None and _widths(alone) == current and \
                _buffer_shapes(alone) == _buffer_shapes(built_now):  # nothing moved: built_now is the input's build
            updated = without
    return updated


def _moved(factory: str, key: str, value: int, updated: dict[str, Any], built_now: nn.Module,
           current: dict, target: dict) -> tuple[int, nn.Module] | None:
    """(new value, its build) when ``key`` alone can take the pruned widths it controls."""
    # value + 1, or twice the value where a config validates divisibility (transformers 5's
    # Llama: hidden_size a multiple of the head count even with an explicit head_dim)
    step, moved = value + 1, meta_model(factory, {**updated, key: value + 1})
    if moved is None and any(key in updated for key in _DERIVED_FIELDS):  # head_dim pinned; BERT: value + 1 only
        step, moved = 2 * value, meta_model(factory, {**updated, key: 2 * value})
    if moved is None:
        return None
    # widths in proportion to the arg: one for one (a layer width), or a unit each (heads of
    # head_dim outputs: num_attention_heads, num_key_value_heads)
    follows = [where for where, width in _widths(moved).items()
               if current.get(where) and current[where] % value == 0 and width * value == current[where] * step]
    wanted = {None if target.get(where) is None or target[where] % (current[where] // value)
              else target[where] // (current[where] // value) for where in follows}
    if len(wanted) != 1 or None in wanted or wanted == {value}:
        return None
    width = wanted.pop()
    candidate = meta_model(factory, {**updated, key: width}, real_buffers=True)
    if candidate is None:
        return None
    widths = _widths(candidate)
    # the arg may set more than these widths (a head size derived from the hidden size, a
    # rotary buffer): only an arg that changes exactly the widths that follow it is taken
    others_kept = all(widths.get(where) == size for where, size in current.items() if where not in follows)
    if others_kept and all(widths.get(where) == target[where] for where in follows) and \
            _same_buffers(candidate, built_now):
        return width, candidate
    return None


def _moved_together(factory: str, pending: list[str], updated: dict[str, Any], built_now: nn.Module,
                    current: dict, target: dict, hard: nn.Module) -> tuple[dict[str, Any], nn.Module]:
    """Args no one of which can move alone: Phi-3's ``qkv_proj`` is ``(num_attention_heads + 2 *
    num_key_value_heads) * head_dim`` wide. Each width is taken as linear in the args (a build with
    each arg one step up gives its slope), the args solving every pruned width exactly are taken
    where one build with all of them has exactly the pruned widths and keeps every int attribute
    that already was the pruned model's (BERT's ``attention_head_size``: a hidden size moved with
    the head count left has the widths but another head size)."""
    slopes: dict[str, dict[tuple[str, str], float]] = {}
    for key in pending:
        step = updated[key] + 1
        moved = meta_model(factory, {**updated, key: step}) or \
            meta_model(factory, {**updated, key: (step := 2 * updated[key])})
        widths = None if moved is None else _widths(moved)
        if widths is None or set(widths) != set(current):
            continue  # another architecture (a layer count), or no build
        column = {where: (widths[where] - width) / (step - updated[key]) for where, width in current.items()
                  if widths[where] != width}
        if column:
            slopes[key] = column
    wheres = sorted({where for column in slopes.values() for where in column})
    if not slopes or any(target.get(where) is None for where in wheres):
        return updated, built_now
    keys = sorted(slopes)
    matrix = torch.tensor([[slopes[key].get(where, 0.0) for key in keys] for where in wheres], dtype=torch.float64)
    wanted = torch.tensor([float(target[where] - current[where]) for where in wheres], dtype=torch.float64)
    change = torch.linalg.lstsq(matrix, wanted[:, None]).solution[:, 0]
    values = {key: updated[key] + round(float(delta)) for key, delta in zip(keys, change)}
    if any(value < 1 for value in values.values()) or all(values[key] == updated[key] for key in keys):
        return updated, built_now
    candidate_args = {**updated, **values}
    candidate = meta_model(factory, candidate_args, real_buffers=True)
    if candidate is None or any(_widths(candidate).get(where) != target.get(where) for where in current) or \
            not _same_buffers(candidate, built_now):
        return updated, built_now
    pruned, before, after = _counts(hard), _counts(built_now), _counts(candidate)
    if any(before.get(key) == value and after.get(key) != value for key, value in pruned.items()):
        return updated, built_now
    return candidate_args, candidate


def _counts(model: nn.Module) -> dict[tuple[str, str], int]:
    """The int attributes of every module that is not a layer (head sizes, head counts)."""
    return {(name, key): value for name, module in model.named_modules() if L.kind_of(module) == "other"
            for key, value in count_attributes(module).items()}


def _head_dims(model: nn.Module) -> dict[str, int]:
    return {name: module.head_dim for name, module in model.named_modules()
            if L.kind_of(module) == "other" and isinstance(getattr(module, "head_dim", None), int)}


def _heads_for_head_dim(factory: str, updated: dict[str, Any], built_now: nn.Module,
                        hard: nn.Module) -> tuple[dict[str, Any], nn.Module]:
    """GPT-2 derives ``head_dim = n_embd // n_head``: a moved hidden width with the head count left
    as it was has the pruned widths but another head size (and softmax scale). The head count is
    then the hidden width over the pruned model's head_dim, where that build has every width and
    head size of the pruned model."""
    wanted, now = _head_dims(hard), _head_dims(built_now)
    config = getattr(built_now, "config", None)
    if not wanted or wanted == now or config is None or len(set(wanted.values())) != 1:
        return updated, built_now
    attribute_map = getattr(type(config), "attribute_map", {})
    heads_key = attribute_map.get("num_attention_heads", "num_attention_heads")
    hidden_key = attribute_map.get("hidden_size", "hidden_size")
    if not (isinstance(updated.get(heads_key), int) and isinstance(updated.get(hidden_key), int)):
        return updated, built_now
    head_dim = next(iter(wanted.values()))
    if updated[hidden_key] % head_dim:
        return updated, built_now
    candidate_args = {**updated, heads_key: updated[hidden_key] // head_dim}
    candidate = meta_model(factory, candidate_args, real_buffers=True)
    if candidate is None or _widths(candidate) != _widths(built_now) or _head_dims(candidate) != wanted:
        return updated, built_now
    return candidate_args, candidate


def _derived_made_explicit(factory: str, args: dict[str, Any], built: nn.Module) -> dict[str, Any]:
    """Config fields a transformers config derives from others unless given (Llama's ``head_dim``
    is ``hidden_size // num_attention_heads``), set to their current value: then a cut hidden
    width or head count moves that arg alone and the result is still a stock config (issue 17:
    RoPE needs the head size unchanged). A config class without the field (Qwen2) gets it where
    its modeling code reads it (``getattr(config, "head_dim", ...)``: a build with another value
    has other widths)."""
    config = getattr(built, "config", None)
    if not factory.startswith("hf:") or config is None:
        return {}
    explicit = {}
    for key in _DERIVED_FIELDS:
        if key in args:
            continue
        value = getattr(config, key, None)
        if not isinstance(value, int):  # the modules' own copy (every attention's head_dim)
            held = {getattr(module, key) for module in built.modules() if isinstance(getattr(module, key, None), int)}
            value = held.pop() if len(held) == 1 else None
        if value is None and _DERIVED_FIELDS[key] is not None and key in vars(config):
            value = _DERIVED_FIELDS[key](config)
        if not isinstance(value, int) or value < 1:
            continue
        if key not in type(config)().to_dict():
            honoured = meta_model(factory, {**args, key: 2 * value})
            if honoured is None or _widths(honoured) == _widths(built):
                continue
        explicit[key] = value
    return explicit


def _same_buffers(candidate: nn.Module, built: nn.Module) -> bool:
    """Equal buffer shapes and, where both are real, equal values: Gemma scales its embeddings by
    ``sqrt(hidden_size)`` (a buffer), so a hidden_size moved to the pruned width would rescale them."""
    theirs = dict(built.named_buffers())
    for name, buffer in candidate.named_buffers():
        other = theirs.get(name)
        if other is None or other.shape != buffer.shape:
            return False
        if not (buffer.is_meta or other.is_meta) and not torch.equal(buffer, other.to(buffer.dtype)):
            return False
    return len(theirs) == len(dict(candidate.named_buffers()))


def _buffer_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(buffer.shape) for name, buffer in model.named_buffers()}
