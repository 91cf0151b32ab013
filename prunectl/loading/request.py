"""What a run asks for, read together: the spec (with the options that override it), the model
factory, and the input shape the model is traced and checked on.

``prune``, ``auto`` and ``info`` all start here, so a spec, a ``--model`` and an
``--input-shape`` mean the same thing to each of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..formats.spec import InputSpec, ModelRef, Spec, read_spec
from ..models.inputs import default_input_dtype, default_input_shape
from ..options import spec_overrides
from .checkpoint import Loaded

TRACED_SOURCE = "<traced spec>"


def requested_spec(spec_path: str | Path | None, options: Any = None) -> Spec:
    """The spec file with the options that override it (``options``: a PruneOptions or AutoOptions),
    or an empty placeholder to be traced once the model is loaded."""
    if spec_path is None:
        return Spec(layers=(), source=TRACED_SOURCE)
    spec = read_spec(spec_path)
    return spec if options is None else spec.with_options(**spec_overrides(options))


def requested_model(spec: Spec, model: str | None) -> ModelRef | None:
    """``--model`` wins over the spec's factory (keeping the spec's args)."""
    if model:
        return ModelRef(model, dict(spec.model.args) if spec.model else {})
    return spec.model


def requested_input(spec: Spec, input_shape: tuple[int, ...] | None, loaded: Loaded, spec_given: bool) -> InputSpec:
    """``--input-shape``, else the spec's input, else a bundle's, else the factory's default."""
    dtype = spec.input.dtype if spec.input else default_input_dtype(loaded.model)
    if input_shape:
        if not all(isinstance(d, int) and 0 < d <= 1 << 20 for d in input_shape):
            raise SpecError(f"--input-shape: expected positive integers, got {input_shape}")
        return InputSpec(tuple(input_shape), dtype)
    if spec.input:
        return spec.input
    if loaded.manifest is not None:
        return InputSpec(tuple(loaded.manifest.input["shape"]), loaded.manifest.input["dtype"])
    shape = default_input_shape(loaded.model_ref, loaded.model) if not spec_given else None
    if shape is not None:
        return InputSpec(shape, dtype)
    raise SpecError(f"{spec.source}: input: missing; add \"input\": {{\"shape\": [1, 3, 224, 224]}} "
                    f"or pass --input-shape")
