"""Which RMSNorm classes prunectl knows, and which of the two formulas each computes.

transformers defines one RMSNorm class per model family (142 in 5.x), most of them copies of
Llama's: ``weight * x / sqrt(mean(x ** 2, -1) + eps)`` in float32, cast back before the scale. Gemma's
family scales by ``1 + weight`` instead, cast after. A class is known when its forward is
torch's ``nn.RMSNorm``, or has exactly the bytecode, constants and names of one of the two
reference classes (a "Copied from" class whose only difference is its name): then the soft
model can compute the same statistic over the kept channels (cut/masked_norms.py). Any other
RMSNorm is traced through as the ops it is, and its mean over the channels is reported (exit 6),
never guessed.

timm's ``RmsNorm`` (over the last dim) and ``RmsNorm2d`` (over dim 1 of NCHW) compute
``x * rsqrt(mean(x ** 2) + eps) * weight`` in the input's own dtype (timm/layers/fast_norm.py
``rms_norm``, ``rms_norm2d``; the fast path, off by default, is the same formula): forms
``"input_dtype"`` and ``"input_dtype_2d"``, known by their class (timm's own, not a subclass).
timm's ``SimpleNorm``/``SimpleNorm2d`` (ConvNeXt's ``*_rms`` variants) scale by the variance
instead, ``x * rsqrt(var(x) + eps) * weight`` with torch.var's unbiased (n - 1) estimate and x
itself not centred: forms ``"variance"`` and ``"variance_2d"``, cut the same way.
"""
from __future__ import annotations

from functools import cache
from types import CodeType, FunctionType

import torch.nn as nn

# (module, class) of the reference implementations, and the formula each stands for
_REFERENCES = {
    ("transformers.models.llama.modeling_llama", "LlamaRMSNorm"): "weight",
    ("transformers.models.gemma.modeling_gemma", "GemmaRMSNorm"): "one_plus_weight",
}
_METHODS = ("forward", "_norm")
_TIMM = {"timm.layers.norm.RmsNorm": "input_dtype", "timm.layers.norm.RmsNorm2d": "input_dtype_2d",
         "timm.layers.norm.SimpleNorm": "variance", "timm.layers.norm.SimpleNorm2d": "variance_2d"}
_OVER_DIM_1 = ("input_dtype_2d", "variance_2d")  # NCHW: the channels in dim 1


def rms_form(module: nn.Module) -> str | None:
    """``"weight"`` (torch's and Llama's), ``"one_plus_weight"`` (Gemma's), ``"input_dtype"`` /
    ``"input_dtype_2d"`` (timm's, over the last dim / dim 1), ``"variance"`` / ``"variance_2d"``
    (timm's SimpleNorm) or None (not a known RMSNorm)."""
    # _parameters, not getattr: under torch.fx tracing a parameter attribute is a proxy
    weight = module._parameters.get("weight")
    if weight is None or weight.dim() != 1:
        return None  # no per-channel scale (elementwise_affine=False): nothing of it is cut
    if isinstance(module, nn.RMSNorm):
        return "weight"
    timm_form = _TIMM.get(f"{type(module).__module__}.{type(module).__qualname__}")
    return timm_form if timm_form is not None else _class_form(type(module))


@cache
def _class_form(cls: type) -> str | None:
    if not cls.__module__.startswith("transformers.") or not cls.__name__.endswith("RMSNorm"):
        return None
    for (module_name, class_name), form in _REFERENCES.items():
        reference = _reference(module_name, class_name)
        if reference is not None and all(_same_code(getattr(cls, name, None), getattr(reference, name, None))
                                         for name in _METHODS):
            return form
    return None


def _reference(module_name: str, class_name: str) -> type | None:
    import importlib

    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return None


def _same_code(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is b
    if not (isinstance(a, FunctionType) and isinstance(b, FunctionType)):
        return False
    return _fingerprint(a.__code__, a.__doc__) == _fingerprint(b.__code__, b.__doc__)


def _fingerprint(code: CodeType, doc: str | None = None) -> tuple:
    consts = [_fingerprint(c) if isinstance(c, CodeType) else c for c in code.co_consts]
    if doc is not None and consts and consts[0] == doc:  # a docstring is no part of what it computes
        consts = consts[1:]
    return code.co_code, tuple(consts), code.co_names, code.co_varnames, code.co_argcount


def over_dim_1(module: nn.Module) -> bool:
    """Whether a known RMSNorm normalises dim 1 of an NCHW tensor (timm's ``*2d``), not the last dim."""
    return rms_form(module) in _OVER_DIM_1


__all__ = ["over_dim_1", "rms_form"]
