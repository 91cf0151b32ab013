"""State dicts: validated on the way in, loaded strictly with a one-line message naming every misfit."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import CheckpointError, first_line


def validate_state_dict(state_dict: Mapping, source: str | Path, fold_masks: bool = True) -> dict[str, torch.Tensor]:
    """A plain dict of finite tensors, with a DataParallel ``module.`` prefix removed and
    torch.nn.utils.prune's ``*_orig``/``*_mask`` pairs folded (unless ``fold_masks`` is False)."""
    if not state_dict:
        raise CheckpointError(f"{source}: state_dict is empty")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: state_dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and value.numel() and not _all_finite(value):
            raise CheckpointError(f"{source}: state_dict[{key!r}] contains NaN or infinite values")
        out[key] = value
    if all(key.startswith("module.") for key in out):
        out = {key[len("module."):]: value for key, value in out.items()}
    return fold_pruning_masks(out, source)[0] if fold_masks else out


ORIG, MASK = "_orig", "_mask"


def pruning_pairs(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """The parameter names saved by ``torch.nn.utils.prune`` as ``NAME_orig`` + ``NAME_mask``."""
    return [key[:-len(ORIG)] for key in state_dict
            if key.endswith(ORIG) and key[:-len(ORIG)] + MASK in state_dict]


def fold_pruning_masks(state_dict: dict[str, torch.Tensor], source: str | Path
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(state_dict, masks)``: each ``NAME_orig``/``NAME_mask`` pair of a model pruned with
    ``torch.nn.utils.prune`` becomes ``NAME = orig * mask`` (what the hooked module computes;
    ``prune.remove`` writes the same), in the pair's place; ``masks`` maps ``NAME`` to its 0/1 mask."""
    names = pruning_pairs(state_dict)
    if not names:
        return state_dict, {}
    masks: dict[str, torch.Tensor] = {}
    folded: dict[str, torch.Tensor] = {}
    for name in names:
        orig, mask = state_dict[name + ORIG], state_dict[name + MASK]
        if name in state_dict:
            raise CheckpointError(f"{source}: state_dict has both {name!r} and {name + ORIG!r}/{name + MASK!r}")
        if mask.shape != orig.shape:
            raise CheckpointError(f"{source}: state_dict[{name + MASK!r}] has shape {tuple(mask.shape)}, "
                                  f"{name + ORIG!r} has {tuple(orig.shape)}")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise CheckpointError(f"{source}: state_dict[{name + MASK!r}] holds values other than 0 and 1")
        masks[name] = mask.to(orig.dtype)
        folded[name] = orig * masks[name]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():  # in the pair's place, so key order stays the model's
        if key.endswith(ORIG) and key[:-len(ORIG)] in folded:
            out[key[:-len(ORIG)]] = folded[key[:-len(ORIG)]]
        elif not (key.endswith(MASK) and key[:-len(MASK)] in folded):
            out[key] = value
    return out, masks


def _all_finite(tensor: torch.Tensor) -> bool:
    # a NaN or inf anywhere makes the sum non-finite, and a sum is 20x cheaper than isfinite()
    # over every element; only a non-finite sum (possibly an overflow) needs the full check
    with torch.no_grad():
        if bool(torch.isfinite(tensor.sum())):
            return True
        return bool(torch.isfinite(tensor).all())


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | Path,
                 assign: bool = False) -> None:
    """Strict load with a one-line message listing missing, unexpected and mis-shaped keys.

    ``assign``: the tensors become the model's (materialize.py, for a model built on meta)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mis_shaped)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{source}: does not fit the model ({type(model).__name__}): " + "; ".join(problems))
    if getattr(state_dict, "_metadata", None) is None:
        # safetensors files and validated copies lose torch's per-module version metadata, and some
        # modules refuse to load without it (torchvision's MNASNet); the model's own versions apply
        state_dict = with_metadata(state_dict, getattr(expected, "_metadata", None))
    try:
        model.load_state_dict(state_dict, strict=True, assign=assign)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: does not fit the model: {first_line(exc)}") from None


def with_metadata(state_dict: Mapping[str, torch.Tensor], metadata: Any) -> Mapping[str, torch.Tensor]:
    if metadata is None:
        return state_dict
    copied: Any = OrderedDict(state_dict)
    copied._metadata = metadata
    return copied


