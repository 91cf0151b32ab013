"""Running a model from one of its submodules (the spec's ``module``, e.g. a detector's backbone).

Detection models cannot be traced whole (data-dependent post-processing), and comparing their
outputs after non-maximum suppression would turn 1e-7 differences into different boxes. The
pruned layers all live in one submodule whose outputs are kept whole, so the rest of the model
computes exactly what it did: tracing and verification run that submodule alone, while names,
plans and the bundle stay those of the whole model.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch.nn as nn

from ..errors import SpecError


class SubmoduleEntry(nn.Module):
    """Calls ``model.get_submodule(path)`` but lists the whole model's modules under their full
    names, so per-layer checks and messages use the spec's paths."""

    def __init__(self, model: nn.Module, path: str):
        super().__init__()
        # plain attributes, not a registered child: named_modules() must be the whole model's own
        self.__dict__["whole"] = model
        self.__dict__["path"] = path

    def named_modules(self, memo: Any = None, prefix: str = "", remove_duplicate: bool = True
                      ) -> Iterator[tuple[str, nn.Module]]:
        return self.whole.named_modules(memo, prefix, remove_duplicate)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.whole.get_submodule(self.path)(*args, **kwargs)


def submodule(model: nn.Module, path: str, source: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise SpecError(f"{source}: module: {path!r} is not a submodule of {type(model).__name__}") from None


def entry(model: nn.Module, path: str | None) -> nn.Module:
    """What to call on the spec's input: the model, or the view of its submodule ``path``."""
    return model if path is None else SubmoduleEntry(model, path)
