"""``prunectl.auto(model, evaluate=..., train=..., ...)``: CAC's or NetAdapt's search on a model held in
memory, with the caller's own callables and loaders.

    result = prunectl.auto(model, evaluate=my_eval, train=my_train, val_loader=val, max_drop=1.0)
    result.model, result.history, result.plan     # the searched model, every accepted step, the cut
    result.save("out/")                           # the bundle ``prunectl auto -o`` writes

Nothing here is a second search: the model becomes the ``Loaded`` a checkpoint file gives, the
callables and loaders a ``Task`` (``user_task.UserTask``), and ``search.auto`` runs as for the CLI.
A registered task name (``task="digits"``) works too, and then gives the CLI's bundle bytes.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Callable

import torch
import torch.nn as nn

from ..criteria.base import Criterion
from ..errors import SpecError
from ..formats.spec import ModelRef
from ..loading.in_memory import calibration_batches, example_input, loaded_module
from ..models.device import resolve_device
from ..options import AutoOptions
from .search import AutoResult, Given
from .search import auto as search
from .user_task import Evaluate, Train, UserTask

_OPTION_NAMES = frozenset(field.name for field in fields(AutoOptions)) - {"task"}


def auto(model: nn.Module, *, evaluate: Evaluate | None = None, train: Train | None = None,
         train_loader: Any = None, val_loader: Any = None, loss: Callable | None = None,
         example_inputs: Any = None, task: str | None = None, factory_args: dict[str, Any] | None = None,
         options: AutoOptions | None = None, events: Callable[[str, dict[str, Any]], None] | None = None,
         **overrides: Any) -> AutoResult:
    """Search per-layer widths for an in-memory ``model``; nothing is written unless ``output`` is set.

    Accuracy mode (CAC, the default): every accepted step stays within ``max_drop`` points of
    ``evaluate(original)``; it needs ``val_loader`` (CAC's sensitivities are gradients on it).
    Target mode (NetAdapt): ``target_macs=`` or ``target_params=``. ``overrides``: any AutoOptions
    field as a keyword (``epochs=2, exclude=("fc3",)``); ``criterion`` may be a Criterion instance.
    ``factory_args`` (and ``model="pkg:factory"``): how ``prunectl.load`` rebuilds the model."""
    if not isinstance(model, nn.Module):
        raise SpecError(f"prunectl.auto: expected a torch.nn.Module, got {type(model).__name__}")
    unknown = sorted(set(overrides) - _OPTION_NAMES)
    if unknown:
        raise SpecError(f"prunectl.auto: unknown option {unknown[0]!r} (options: {', '.join(sorted(_OPTION_NAMES))})")
    for name, value in (("evaluate", evaluate), ("train", train), ("loss", loss)):
        if value is not None and not callable(value):
            raise SpecError(f"prunectl.auto: {name} must be a callable, got {type(value).__name__}")
    criterion = overrides.pop("criterion", None)
    instance = criterion if isinstance(criterion, Criterion) else None
    if criterion is not None and instance is None and not isinstance(criterion, str):
        raise SpecError(f"criterion: expected a name or a prunectl Criterion instance, got {type(criterion).__name__}")
    base = options or AutoOptions()
    options = replace(base, **overrides, task=task if task is not None else base.task,
                      criterion=instance.name if instance else criterion if criterion is not None else base.criterion)
    resolve_device(options.device)  # a device that is not here: refused before the model is copied
    if factory_args is not None and not isinstance(factory_args, dict):
        raise SpecError(f"factory_args: expected a dict of constructor arguments, got {type(factory_args).__name__}")
    ref = (ModelRef(options.model, dict(factory_args or {})) if options.model else
           ModelRef.of_class(model, factory_args) if factory_args else None)
    example = _example(example_inputs, train_loader, val_loader, spec_given=options.spec is not None)
    user_task = None
    if options.task is None:
        user_task = _user_task(options, evaluate, train, train_loader, val_loader, loss, example)
    elif any(x is not None for x in (evaluate, train, train_loader, val_loader, loss)):
        raise SpecError("prunectl.auto: task= names a registered task, which brings its own data and metric; "
                        "pass either task= or evaluate/train/loaders")
    given = Given(loaded_module(model, ref, "prunectl.auto"), example, user_task, instance, ref is not None)
    return search(None, options, events, given)


def _example(example_inputs: Any, train_loader: Any, val_loader: Any, spec_given: bool) -> torch.Tensor | None:
    """The input the model is traced and proven on: ``example_inputs``, else one loader input."""
    if example_inputs is not None:
        return example_input(example_inputs)
    for loader in (val_loader, train_loader):
        if loader is not None:
            first = calibration_batches(loader, None, source="val_loader" if loader is val_loader else "train_loader")
            return first.batches[0][0][:1]
    if spec_given:
        return None  # the spec's input shape
    raise SpecError("prunectl.auto: pass example_inputs= (or a loader) to trace the model on")


def _user_task(options: AutoOptions, evaluate: Evaluate | None, train: Train | None, train_loader: Any,
               val_loader: Any, loss: Callable | None, example: torch.Tensor | None) -> UserTask:
    targeted = options.target_macs is not None or options.target_params is not None
    if evaluate is None and val_loader is None:
        raise SpecError("prunectl.auto: pass evaluate= (a metric, higher is better) or val_loader= (top-1 accuracy)")
    if not targeted and val_loader is None:
        raise SpecError("prunectl.auto: accuracy mode (CAC) computes its sensitivities on validation batches: pass "
                        "val_loader= (or target_macs=/target_params= for NetAdapt)")
    if train is not None and options.lr is not None:
        raise SpecError("prunectl.auto: lr= sets prunectl's own training; the given train() chooses its own learning "
                        "rate (leave lr unset, or pass train_loader= instead of train=)")
    if train is None and train_loader is None and (options.epochs or options.final_epochs):
        raise SpecError("prunectl.auto: nothing to retrain with: pass train= or train_loader= (or epochs=0)")
    training = None if train_loader is None else calibration_batches(train_loader, example, loss, "train_loader")
    validation = None if val_loader is None else calibration_batches(val_loader, example, loss, "val_loader")
    return UserTask(evaluate, train, training, validation, loss)
