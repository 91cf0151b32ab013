"""prunectl: structured pruning for PyTorch with verified, pickle-free bundles.

    import prunectl
    result = prunectl.prune("ckpt.pt", spec="spec.json", rate=0.5, output="out/")
    result = prunectl.prune(model, example_inputs=torch.randn(1, 3, 224, 224), rate=0.3)  # in memory
    result = prunectl.auto(model, evaluate=my_eval, train=my_train, val_loader=val, max_drop=1.0)
    model = prunectl.load("out/")

The names below are imported when first used (PEP 562), so that ``prunectl --version`` and
``prunectl --help`` do not pay for importing torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .version import __version__

_WHERE = {
    "prune": "api", "verify": "api", "export": "api", "load": "api", "info": "api", "PruneResult": "api",
    "soft": "in_process",
    "evaluate_perplexity": "measure.perplexity",
    "PruneOptions": "options",
    "Pruner": "hooks",
    "derive_spec": "tracing",
    "Spec": "formats.spec", "read_spec": "formats.spec", "write_spec": "formats.spec",
    "PrunectlError": "errors", "SpecError": "errors", "VerificationError": "errors", "CheckpointError": "errors",
    "UnsupportedError": "errors",
}

__all__ = ["prune", "soft", "auto", "verify", "export", "load", "info", "evaluate_perplexity", "derive_spec",
           "PruneOptions", "PruneResult", "Pruner", "Spec", "read_spec", "write_spec", "PrunectlError", "SpecError",
           "VerificationError", "CheckpointError", "UnsupportedError", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "auto":  # the package itself is the function (prunectl/auto/__init__.py says why)
        return import_module(".auto", __name__)
    if name not in _WHERE:
        raise AttributeError(f"module 'prunectl' has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
