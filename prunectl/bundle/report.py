"""report.json: the deterministic figures of a prune (params, MACs, bytes, widths, groups).

Timings are not in it (they vary run to run; ``PruneResult.timings`` has them); ``--latency``
adds a ``latency`` section and then the bundle is no longer byte-identical. docs/formats.md
lists every field.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup
from ..measure.size import count_macs, count_params, layer_widths, size_bytes

REPORT_VERSION = 1


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
        "prunectl_report": REPORT_VERSION,
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
