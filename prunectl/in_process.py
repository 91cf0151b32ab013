"""The in-process side of ``prunectl.prune``: what a caller hands over as objects (a model, example
inputs, a ``Criterion`` instance, a DataLoader, a loss), and ``soft``, the masked same-shape model.

    result = prunectl.prune(model, example_inputs=torch.randn(1, 3, 32, 32), rate=0.3)
    result.model           # the smaller model, proven to compute what the masked one does
    result.save("out/")    # the bundle ``prunectl prune`` writes
    masked = prunectl.soft(model, result.plan)

Nothing here is a second pipeline: these objects become the ``Loaded``, input spec and
calibration data the checkpoint path produces (loading/in_memory.py), and ``api._prune`` runs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .criteria.base import Criterion
from .cut.plan import ModuleCut
from .cut.soft import soft_prune
from .errors import SpecError, first_line
from .formats.spec import ModelRef
from .loading.checkpoint import Loaded
from .loading.data import CalibrationData
from .loading.in_memory import calibration_batches, example_input, loaded_module
from .models.device import resolve_device
from .options import PruneOptions

Plan = dict[str, ModuleCut]
_OPTION_NAMES = frozenset(field.name for field in fields(PruneOptions))


@dataclass(frozen=True)
class Given:
    """What the caller passed as objects; ``None`` where the options' file or name is used."""

    loaded: Loaded | None = None  # an in-memory model, copied
    example: torch.Tensor | None = None
    criterion: Criterion | None = None
    data: CalibrationData | None = None
    factory_given: bool = False  # the caller said how to rebuild the model (model= or factory_args=)

    def loaded_with(self, spec_model: ModelRef | None) -> Loaded:
        """The in-memory model, rebuilt as the spec's ``model`` says unless the caller said otherwise
        (a spec's factory and args beat the bare class: its args may be needed)."""
        if spec_model is None or self.factory_given:
            return self.loaded
        return replace(self.loaded, model_ref=spec_model)


def resolve(checkpoint: Any, options: PruneOptions | None, overrides: dict[str, Any], *,
            example_inputs: Any = None, loss: Callable | None = None, factory_args: dict[str, Any] | None = None
            ) -> tuple[Any, PruneOptions, Given]:
    """(checkpoint path or None, the options, the given objects) for one ``prune`` call.

    ``overrides``: PruneOptions fields as keywords (``rate=0.3``); ``criterion`` may be a
    ``Criterion`` instance and ``data`` a DataLoader or any iterable of batches."""
    unknown = sorted(set(overrides) - _OPTION_NAMES)
    if unknown:
        raise SpecError(f"prunectl.prune: unknown option {unknown[0]!r} (options: {', '.join(sorted(_OPTION_NAMES))})")
    criterion, data = overrides.pop("criterion", None), overrides.pop("data", None)
    options = replace(options or PruneOptions(), **overrides)
    resolve_device(options.device)  # a device that is not here: refused before the model is copied
    criterion = criterion if criterion is not None else options.criterion
    if isinstance(criterion, Criterion):
        instance, options = criterion, replace(options, criterion=criterion.name)
    elif criterion is None or isinstance(criterion, str):
        instance, options = None, replace(options, criterion=criterion)
    else:
        raise SpecError(f"criterion: expected a name or a prunectl Criterion instance, got {type(criterion).__name__}")
    example = example_input(example_inputs) if example_inputs is not None else None
    in_memory = isinstance(checkpoint, nn.Module)
    if factory_args is not None and not in_memory:
        raise SpecError("factory_args: only for an in-memory model (a checkpoint file's args are in its 'model' "
                        "or the spec)")
    if factory_args is not None and not isinstance(factory_args, dict):
        raise SpecError(f"factory_args: expected a dict of constructor arguments, got {type(factory_args).__name__}")
    loaded, ref = None, None
    if in_memory:
        if options.model:
            ref = ModelRef(options.model, dict(factory_args or {}))
        elif factory_args:
            ref = ModelRef.of_class(checkpoint, factory_args)
        loaded, checkpoint = loaded_module(checkpoint, ref), None
    elif not isinstance(checkpoint, (str, Path)):
        raise SpecError(f"prunectl.prune: expected a torch.nn.Module or a checkpoint path, got "
                        f"{type(checkpoint).__name__}")
    batches = None
    if data is not None and not isinstance(data, (str, Path)):
        batches = calibration_batches(data, example, loss)
    elif data is not None:
        options = replace(options, data=data)
    if loss is not None and batches is None:
        raise SpecError("loss: applies to in-memory data (a DataLoader or an iterable of batches)")
    return checkpoint, options, Given(loaded, example, instance, batches, in_memory and ref is not None)


def soft(model: nn.Module, plan: Plan) -> nn.Module:
    """A copy of ``model`` with every channel ``plan`` cuts zeroed: same shapes, the computation
    the pruned model was proven against (``PruneResult.plan``); on ``model``'s device."""
    if not isinstance(model, nn.Module):
        raise SpecError(f"prunectl.soft: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(plan, dict) or not all(isinstance(cut, ModuleCut) for cut in plan.values()):
        raise SpecError("prunectl.soft: plan must be the plan of a PruneResult (result.plan)")
    # a plan entry names a layer, or a parameter or count attribute of a module ("pos_embedding.weight")
    missing = sorted(name for name in plan if not _has_path(model, name))
    if missing:
        raise SpecError(f"prunectl.soft: the model has no layer {missing[0]!r} of the plan; "
                        "pass the model the plan was made for")
    device = next((tensor.device for tensor in model.parameters()), torch.device("cpu"))
    try:
        masked = soft_prune(copy.deepcopy(model).cpu(), plan, in_place=True)
    except (IndexError, RuntimeError) as exc:  # same names, other widths
        raise SpecError(f"prunectl.soft: the plan does not fit this model's widths ({first_line(exc)})") from None
    return masked.to(device)


def _has_path(model: nn.Module, dotted: str) -> bool:
    target: object = model
    for part in dotted.split("."):
        if not hasattr(target, part):
            return False
        target = getattr(target, part)
    return True
