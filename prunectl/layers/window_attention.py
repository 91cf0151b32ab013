"""Attention over windows on a residual stream: which modules, and the hard model's class.

torchvision's Swin (``ShiftedWindowAttention``, ``ShiftedWindowAttentionV2``) and MaxViT
(``RelativePositionalMultiHeadAttention``) read the residual stream with one packed q/k/v
projection and write it back with another, and size the heads from the input's width. Their
residual width is cut in the first projection's input columns and the second's output rows; the
heads stay whole (window_attention_modules.py has the computation, docs/decisions.md the reasons).
The classes are named here by module path, so that a model without them never imports
torchvision's model code (a second of start-up); the subclasses are imported only when one is found.
"""
from __future__ import annotations

import torch.nn as nn

from ..errors import UnsupportedError

_SWIN, _MAXVIT, _CUT = ("torchvision.models.swin_transformer", "torchvision.models.maxvit",
                        "prunectl.layers.window_attention_modules")
# (module path, class name) -> (the projection reading the stream, the one writing it back)
_PROJECTIONS = {
    (_SWIN, "ShiftedWindowAttention"): ("qkv", "proj"),
    (_SWIN, "ShiftedWindowAttentionV2"): ("qkv", "proj"),
    (_MAXVIT, "RelativePositionalMultiHeadAttention"): ("to_qkv", "merge"),
    (_CUT, "ResidualCutWindowAttention"): ("qkv", "proj"),
    (_CUT, "ResidualCutWindowAttentionV2"): ("qkv", "proj"),
    (_CUT, "ResidualCutRelativeAttention"): ("to_qkv", "merge"),
}


def stream_projections(module: nn.Module) -> tuple[str, str] | None:
    """(reader, writer) attribute names of a window attention prunectl knows, else None. Exact
    classes only: a user's subclass may compute something else, so it is traced through."""
    return _PROJECTIONS.get((type(module).__module__, type(module).__qualname__))


def is_window_attention(module: nn.Module) -> bool:
    return stream_projections(module) is not None


def adapt_window_attention(model: nn.Module) -> None:
    """Give every window attention whose residual width differs from its heads' width the
    residual-cut subclass (and torchvision's class back where they match again)."""
    found = [(name, module) for name, module in model.named_modules() if is_window_attention(module)]
    if not found:
        return
    from .window_attention_modules import CLASSES

    for name, module in found:
        reader_name, writer_name = stream_projections(module)
        reader, writer = getattr(module, reader_name), getattr(module, writer_name)
        inner = writer.weight.shape[1]  # the heads' width: never cut
        heads = getattr(module, "num_heads", None) or module.n_heads
        per_head = getattr(module, "head_dim", inner // heads)  # MaxViT keeps it; Swin derives it
        if reader.weight.shape[0] != 3 * inner or inner != heads * per_head:
            raise UnsupportedError(
                f"{name or type(model).__name__}: the heads of a window attention are never cut ({reader_name} has "
                f"{reader.weight.shape[0]} outputs, {writer_name} {inner} inputs, {heads} heads); list only "
                f"{reader_name}.weight (dim 1) and {writer_name} with \"prev\": [], as `prunectl spec` writes them")
        # a parameter entry ("qkv.weight", dim 1) sliced or resized the weight, not the Linear's attribute
        reader.in_features = reader.weight.shape[1]
        original, cut = CLASSES[type(module)]
        module.__class__ = cut if reader.in_features != inner or writer.out_features != inner else original
