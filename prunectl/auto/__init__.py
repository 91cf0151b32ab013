"""Automatic per-layer rates: CAC's accuracy-controlled search and NetAdapt's target mode.

In process: ``prunectl.auto(model, evaluate=..., train=..., val_loader=..., max_drop=1.0)``
(``in_memory.auto``); on a checkpoint file: ``prunectl.auto.search.auto(checkpoint,
prunectl.options.AutoOptions(task="digits", ...))``, what ``prunectl auto`` runs; see docs/auto.md.

``prunectl.auto`` is this package and the function at once: importing a subpackage sets the
parent's attribute of that name to the module (so a function ``prunectl.auto`` would be replaced
the first time anything imports ``prunectl.auto.search``); the package is made callable instead.
"""
from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .in_memory import auto

        return auto(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
