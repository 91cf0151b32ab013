"""``prunectl spec``: trace a checkpoint's model (or a factory's fresh one) and write the spec."""
from __future__ import annotations

from pathlib import Path

from ..errors import SpecError
from ..formats.spec import ModelRef, Spec, write_spec
from ..loading.checkpoint import Loaded, load_checkpoint
from ..loading.request import requested_input
from ..models.factory import build as build_model
from ..models.submodule import submodule
from .trace import TraceResult, trace_model


def trace_spec(checkpoint: str | Path | None = None, model: str | None = None,
               input_shape: tuple[int, ...] | None = None, skip_unsupported: bool = False,
               trust_pickle: bool = False, module: str | None = None) -> TraceResult:
    """Derive a spec by tracing a checkpoint's model, or a factory's freshly built one
    (``module``: only that submodule, on its own input; the spec records it and keeps full names)."""
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint, ModelRef(model, {}) if model else None, trust_pickle)
    elif model:
        loaded = Loaded(build_model(model, {}), ModelRef(model, {}), Path(model), "")
    else:
        raise SpecError("nothing to trace: pass a checkpoint, --model FACTORY, or both")
    input_spec = requested_input(Spec(layers=(), source="--input-shape"), input_shape, loaded, spec_given=False)
    target = loaded.model if module is None else submodule(loaded.model, module, "--module")
    return trace_model(target, input_spec.shape, dtype=input_spec.dtype, model_ref=loaded.model_ref,
                       skip_unsupported=skip_unsupported).under(module)


def write_traced_spec(traced: TraceResult, path: str | Path) -> None:
    """Write the traced spec atomically (a temporary file beside it, then rename)."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.tmp")
    try:
        write_spec(traced.spec, staging)
        staging.replace(path)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise SpecError(f"{path}: cannot write the spec ({exc.strerror or exc})") from None
