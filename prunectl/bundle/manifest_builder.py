"""The one place a manifest is assembled, for ``prune`` and ``auto`` alike.

What every bundle records: how to rebuild the model (factory + args + resize), the kept channels in
the numbering of the very first checkpoint (composed through an input bundle's own ``kept`` when a
bundle is pruned again), the input it was checked on, how the channels were chosen and the proof's
figures, and where it came from (file name and sha256, and the spec's sha256).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cut.plan import compose
from ..formats.manifest import Manifest
from ..formats.spec import InputSpec, ModelRef
from .writer import versions


def build_manifest(*, model_ref: ModelRef, args: dict[str, Any], resize: dict[str, dict[str, int]],
                   kept: dict[str, list[int]], input_spec: InputSpec, facts: dict[str, Any], checkpoint: str | Path,
                   checkpoint_sha256: str, spec_sha256: str | None, previous: Manifest | None = None) -> Manifest:
    """``facts``: what this run chose and proved (criterion, rate, selection, verify, ...);
    ``previous``: the input bundle's manifest when a bundle is pruned again."""
    if previous is not None:  # iterative pruning: indices in the very first numbering
        kept = compose(previous.kept, kept)
    extra = {**facts, "source": {"path": Path(checkpoint).name, "sha256": checkpoint_sha256},
             **({"spec_sha256": spec_sha256} if spec_sha256 else {})}
    return Manifest(rebuild={"factory": model_ref.factory, "args": args}, resize=resize, kept=kept,
                    input=input_spec.to_json(), files={}, versions=versions(), extra=extra)
