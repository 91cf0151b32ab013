"""``torchvision:NAME``: any model of ``torchvision.models.list_models()``, random init (never downloads)."""
from __future__ import annotations

import inspect
from typing import Any

import torch.nn as nn

from ..errors import SpecError
from .factory import DOWNLOAD_ARGS


def torchvision_factory(name: str, **args: Any) -> nn.Module:
    """``torchvision:NAME``: any model of ``torchvision.models.list_models()``, random init."""
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        raise SpecError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()")
    args = {k: v for k, v in args.items() if k not in DOWNLOAD_ARGS}
    builder = torchvision.models.get_model_builder(name)
    if "weights_backbone" in inspect.signature(builder).parameters:
        # segmentation and detection builders default to downloading an ImageNet backbone
        args["weights_backbone"] = None
    return builder(weights=None, **args)
