"""prunectl: structured pruning for PyTorch with verified, pickle-free bundles.

    import prunectl
    result = prunectl.prune("ckpt.pt", prunectl.PruneOptions(spec="spec.json", rate=0.5, output="out/"))
    model = prunectl.load("out/")
"""
__version__ = "0.1.0"

from .api import PruneOptions, PruneResult, export, info, load, prune, verify  # noqa: E402
from .errors import (CheckpointError, PrunectlError, SpecError, UnsupportedError,  # noqa: E402
                     VerificationError)
from .spec import Spec, read_spec, write_spec  # noqa: E402
from .tracing import derive_spec  # noqa: E402

__all__ = ["prune", "verify", "export", "load", "info", "derive_spec", "PruneOptions", "PruneResult", "Spec", "read_spec",
           "write_spec", "PrunectlError", "SpecError", "VerificationError", "CheckpointError",
           "UnsupportedError", "__version__"]
