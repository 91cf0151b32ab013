"""Swin's shifted-window attention on a residual stream: which modules, and the hard model's class.

The residual width of torchvision's Swin (``ShiftedWindowAttention``, ``ShiftedWindowAttentionV2``)
is read by ``qkv``'s input columns and written by ``proj``'s output rows; the heads stay whole
(window_attention_cut.py has the computation, docs/decisions.md the reasons). These two functions
name the classes by module path, so that a model without Swin never imports torchvision's model
code (a second of start-up); the subclasses are imported only when such a module is found.
"""
from __future__ import annotations

import torch.nn as nn

from .errors import UnsupportedError

_KNOWN = {
    ("torchvision.models.swin_transformer", "ShiftedWindowAttention"),
    ("torchvision.models.swin_transformer", "ShiftedWindowAttentionV2"),
    ("prunectl.window_attention_cut", "ResidualCutWindowAttention"),
    ("prunectl.window_attention_cut", "ResidualCutWindowAttentionV2"),
}


def is_window_attention(module: nn.Module) -> bool:
    """torchvision's shifted-window attention, or prunectl's residual-cut subclass of it. Exact
    classes only: a user's subclass may compute something else, so it is traced through."""
    return (type(module).__module__, type(module).__qualname__) in _KNOWN


def adapt_window_attention(model: nn.Module) -> None:
    """Give every shifted-window attention whose residual width differs from its heads' width the
    residual-cut subclass (and torchvision's class back where they match again)."""
    found = [(name, module) for name, module in model.named_modules() if is_window_attention(module)]
    if not found:
        return
    from .window_attention_cut import CLASSES

    for name, module in found:
        qkv, proj = module.qkv, module.proj
        inner = proj.weight.shape[1]
        if qkv.weight.shape[0] != 3 * inner or inner % module.num_heads:
            raise UnsupportedError(
                f"{name or type(model).__name__}: the heads of a shifted-window attention are never cut "
                f"(qkv has {qkv.weight.shape[0]} outputs, proj {inner} inputs, {module.num_heads} heads); "
                "list only qkv.weight (dim 1) and proj with \"prev\": [], as `prunectl spec` writes them")
        # a parameter entry ("qkv.weight", dim 1) sliced or resized the weight, not the Linear's attribute
        qkv.in_features = qkv.weight.shape[1]
        original, cut = CLASSES[type(module)]
        module.__class__ = cut if qkv.in_features != inner or proj.out_features != inner else original
