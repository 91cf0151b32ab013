"""``timm:NAME``: a timm model with random init (extra ``timm``), registered in ``prunectl.models``.

timm is imported inside the factory, so prunectl works without it and says which extra to install.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..errors import SpecError


def timm_factory(name: str, **args: Any) -> nn.Module:
    """``timm:NAME``: any model of ``timm.list_models()``, random init (never downloads)."""
    try:
        import timm
    except ImportError:
        raise SpecError(f"model factory 'timm:{name}' needs timm: pip install 'prunectl[timm]'") from None
    if name not in timm.list_models():
        raise SpecError(f"unknown timm model {name!r}; see timm.list_models()")
    args = {k: v for k, v in args.items() if k not in ("pretrained", "pretrained_cfg_overlay")}
    return timm.create_model(name, pretrained=False, **args)
