"""prunectl: structured pruning for PyTorch with verified, pickle-free bundles.

    import prunectl
    result = prunectl.prune("ckpt.pt", prunectl.PruneOptions(spec="spec.json", rate=0.5, output="out/"))
    model = prunectl.load("out/")
"""
from .api import PruneResult, export, info, load, prune, verify
from .errors import CheckpointError, PrunectlError, SpecError, UnsupportedError, VerificationError
from .formats.spec import Spec, read_spec, write_spec
from .options import PruneOptions
from .tracing import derive_spec
from .version import __version__

__all__ = ["prune", "verify", "export", "load", "info", "derive_spec", "PruneOptions", "PruneResult", "Spec",
           "read_spec", "write_spec", "PrunectlError", "SpecError", "VerificationError", "CheckpointError",
           "UnsupportedError", "__version__"]
