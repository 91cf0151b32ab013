"""Size and cost figures: parameters, bytes, MACs (torch.utils.flop_counter), widths per layer."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from . import layers as L
from .attention import unfused_attention
from .groups import ChannelGroup


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@contextmanager
def mac_counter() -> Iterator[FlopCounterMode]:
    """A flop counter for one forward pass; ``macs_of`` reads it.

    nn.MultiheadAttention's eval fast path is one fused op the flop counter does not see, so a
    ViT's attention would count as 0 MACs (and a pruned one, through the unfused path, as more):
    the fast path is off while counting."""
    counter = _TotalFlopCounter()
    with unfused_attention(), counter:
        yield counter


class _TotalFlopCounter(FlopCounterMode):
    """torch's flop counter without its per-module breakdown, which prunectl never reads: the
    breakdown comes from a ModuleTracker hooking every module call (a pytree walk over its inputs
    and outputs), a third of the counter's cost (mobilenet_v3: 40 -> 31 ms a forward). Same ops,
    same formulas, same total (torch is pinned; its ``_count_flops`` reads ``mod_tracker.parents``)."""

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _GlobalOnly()


class _GlobalOnly:
    """Stands in for FlopCounterMode's ModuleTracker: every count goes to the total ("Global")."""

    parents = frozenset({"Global"})

    def __enter__(self) -> "_GlobalOnly":
        return self

    def __exit__(self, *args: object) -> None:
        return None


def macs_of(counter: FlopCounterMode) -> int:
    return int(counter.get_total_flops()) // 2  # torch counts a multiply-accumulate as 2 FLOPs


@torch.no_grad()
def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass."""
    with mac_counter() as counter:
        model(x)
    return macs_of(counter)


def layer_widths(model: nn.Module, names: list[str]) -> dict[str, int]:
    modules = dict(model.named_modules())
    return {name: L.out_width(modules[name]) for name in names if name in modules}


def build_report(original: nn.Module, pruned: nn.Module, x: torch.Tensor, layer_names: list[str],
                 groups: list[ChannelGroup], kept: list[torch.Tensor | None],
                 macs: tuple[int | None, int | None] = (None, None)) -> dict[str, Any]:
    """Deterministic figures for report.json (timings are reported separately).

    ``macs``: (before, after) when the caller counted them in a forward pass it ran anyway.
    ``original`` may be the soft-pruned model: shapes, parameter counts and MACs are the same."""
    modules = dict(original.named_modules())
    before = layer_widths(original, layer_names)
    after = layer_widths(pruned, layer_names)
    params = (count_params(original), count_params(pruned))
    macs = (macs[0] if macs[0] is not None else count_macs(original, x),
            macs[1] if macs[1] is not None else count_macs(pruned, x))
    return {
        "prunectl_report": 1,
        "params": _pair(*params),
        "macs": _pair(*macs),
        "size_bytes": _pair(size_bytes(original), size_bytes(pruned)),
        "layers": [{"name": name, "type": type(modules[name]).__name__, "before": before[name],
                    "after": after[name]} for name in layer_names if name in before],
        "groups": [{"layers": list(group.layers), "size": group.size,
                    "kept": group.size if k is None else len(k),
                    **({"pinned_by": list(group.pinned_by)} if group.pinned_by else {})}
                   for group, k in zip(groups, kept)],
    }


def _pair(before: int, after: int) -> dict[str, Any]:
    return {"before": before, "after": after, "ratio": round(after / before, 6) if before else None}
