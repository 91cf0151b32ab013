"""``prunectl auto``: per-layer rates found automatically, retraining as the search goes.

Two modes, one loop (docs/auto.md says which paper each follows and where it differs):
- accuracy mode (no target): CAC's accuracy-controlled search (``cac.py``): cut while the
  validation accuracy stays within ``max_drop`` points of the original;
- target mode (``target_macs`` / ``target_params``): NetAdapt (``netadapt.py``): greedy
  per-layer proposals with short fine-tunes until the budget is met.

After every search step the state is saved atomically (``state.py``), so ``resume=True``
continues a killed run from its last completed step and ends with the same bundle bytes as
an uninterrupted run (per-step seeds, deterministic kernels, one thread by default). Under
torchrun, fine-tuning is data-parallel and NetAdapt's proposals are spread over the ranks;
only rank 0 writes. The final bundle is written by ``bundle.writer.write_bundle``, like ``prune``'s.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ..bundle.staging import check_output_path
from ..coupling.groups import build_groups
from ..criteria import get_criterion
from ..criteria.base import Criterion
from ..cut.plan import ModuleCut, make_plan
from ..errors import SpecError
from ..formats.manifest import Manifest
from ..loading.checkpoint import Loaded, load_checkpoint
from ..loading.data import CalibrationData, load_data
from ..loading.in_memory import input_spec_of
from ..loading.request import requested_input, requested_model, requested_spec
from ..models.device import is_cpu, resolve_device
from ..models.inputs import make_inputs
from ..options import DEFAULT_CRITERION, AutoOptions, spec_overrides
from ..selection.per_layer import SelectOptions
from ..selection.strategy import pin_excluded
from ..tasks import Task, get_task
from ..tracing import trace_model
from ..training.device_task import on_device_task
from ..training.distributed import from_environment
from ..training.run_state import first_difference
from . import steps as S
from .results import write_auto_bundle
from .run import Events, SearchRun
from .state import load_state, remove_state, state_dir_for


@dataclass
class AutoResult:
    output: Path | None
    history: list[dict[str, Any]]
    report: dict[str, Any]
    stopped_because: str
    wall_seconds: float
    manifest: Any = None  # the bundle's Manifest (rank 0)
    extra: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)  # the searched model, as the bundle rebuilds it
    plan: dict[str, ModuleCut] = field(default_factory=dict, repr=False)  # what was cut: prunectl.soft(model, plan)
    _writer: Callable[[Path], tuple[Manifest, dict]] | None = field(default=None, repr=False)

    def save(self, directory: str | Path) -> Path:
        """Write the bundle ``prunectl auto -o`` writes (atomically)."""
        if self._writer is None:
            raise SpecError("this auto result has no model to save (not rank 0)")
        directory = Path(directory)
        check_output_path(directory)
        self.manifest, self.report = self._writer(directory)
        self.output = directory
        return directory


@dataclass(frozen=True)
class Given:
    """What an in-process caller handed over as objects (``prunectl.auto(model, ...)``); ``None``
    where the options' checkpoint file, spec input or task name is used."""

    loaded: Loaded | None = None  # an in-memory model, already copied
    example: torch.Tensor | None = None
    task: Task | None = None
    criterion: Criterion | None = None
    factory_given: bool = False  # the caller said how the model is rebuilt (model= or factory_args=)

    def loaded_with(self, spec_model: Any) -> Loaded | None:
        """The in-memory model, rebuilt as the spec's ``model`` says unless the caller said otherwise."""
        if self.loaded is None or spec_model is None or self.factory_given:
            return self.loaded
        return replace(self.loaded, model_ref=spec_model)


def _fingerprint(options: AutoOptions, checkpoint_sha: str, spec_sha: str | None, micro: int) -> dict[str, Any]:
    kept = asdict(options)
    for volatile in ("output", "resume", "budget_minutes", "threads", "max_steps", "onnx"):
        kept.pop(volatile)
    if is_cpu(resolve_device(kept["device"])):  # a CPU run's state reads as it did before --device
        kept.pop("device")
    kept.update({"checkpoint_sha256": checkpoint_sha, "spec_sha256": spec_sha, "micro_batches": micro,
                 "spec": str(options.spec) if options.spec else None, "rates": list(options.rates),
                 "exclude": list(options.exclude)})  # as the state's JSON reads back
    return kept


def auto(checkpoint: str | Path | None, options: AutoOptions, events: Events | None = None,
         given: Given = Given()) -> AutoResult:
    """Search per-layer widths for ``checkpoint`` (or ``given.loaded``) on ``options.task`` (or
    ``given.task``); write the bundle (rank 0) when ``options.output`` is set or a file was given."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if options.threads:
            torch.set_num_threads(options.threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        return _auto(checkpoint, options, events, given)
    finally:  # the caller's process settings, as they were
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _auto(checkpoint: str | Path | None, options: AutoOptions, events: Events | None, given: Given) -> AutoResult:
    started = time.perf_counter()
    emit = events or (lambda _kind, _info: None)
    options.check()
    device = resolve_device(options.device)  # a device that is not here: exit 3 before anything is read
    group = from_environment()
    micro = options.micro_batches or group.world
    # a file's run always writes (NAME-auto by default); an in-memory one only when asked, else result.save
    output = (Path(options.output) if options.output else
              None if checkpoint is None else Path(f"{Path(checkpoint).name.split('.')[0]}-auto"))
    if group.is_writer and output is not None:
        check_output_path(output)

    spec = requested_spec(options.spec, options)
    loaded = given.loaded_with(spec.model) or load_checkpoint(checkpoint, requested_model(spec, options.model))
    original = loaded.model.eval()
    input_spec = (input_spec_of(given.example) if given.example is not None else
                  requested_input(spec, None, loaded, spec_given=options.spec is not None))
    if options.spec is None:
        spec = trace_model(original, input_spec.shape, dtype=input_spec.dtype,
                           model_ref=loaded.model_ref).spec.with_options(**spec_overrides(options))
    # the task's metric and training (a plugin's, or the caller's evaluate/train) run the model on the device
    task = on_device_task(given.task or get_task(options.task), device)
    criterion = given.criterion or get_criterion(spec.criterion or DEFAULT_CRITERION)
    select = SelectOptions.from_spec(spec, criterion, rate=0.0)
    data = _calibration(options, task, given) if criterion.needs_data else None
    ctx = S.Context(spec, criterion, select, data, make_inputs(input_spec, options.seed, model=original), options.seed,
                    exclude=tuple(options.exclude), device=device)
    ctx.original_groups = pin_excluded(build_groups(spec, original), ctx.exclude)

    spec_sha = spec.sha256
    fingerprint = _fingerprint(options, loaded.sha256, spec_sha, micro)
    state_dir = state_dir_for(output) if output is not None else None  # in memory, unsaved: not resumable
    saved = load_state(state_dir) if group.is_writer and state_dir is not None else None
    if saved is not None and not options.resume:
        raise SpecError(f"{state_dir}: holds an unfinished auto run; pass --resume to continue it, or remove it")
    saved = group.broadcast_object(saved, 0)
    run = SearchRun(ctx, task, options, group, micro, emit, original)
    run.input_spec = input_spec
    if saved is not None:
        state, weights = saved
        differs = first_difference(state["fingerprint"], fingerprint)
        if differs is not None:
            raise SpecError(f"{state_dir}: was started with other inputs or options ({differs}); "
                            "remove it to start over")
        run.resume(state, weights)
    else:
        run.start(fingerprint)

    previous = run.state["elapsed"]
    while not run.state["done"]:
        stop = None
        if run.state["step"] >= options.max_steps:
            stop = "--max-steps reached"
        elif options.budget_minutes is not None and (
                previous + time.perf_counter() - started) >= 60 * options.budget_minutes:
            stop = "--budget-minutes spent"
        stop = group.broadcast_object(stop, 0)  # time is rank 0's call, or ranks could part ways
        if stop:
            run.state.update(done=True, stopped_because=stop)
        else:
            run.step()
        run.state["elapsed"] = previous + time.perf_counter() - started
        run.checkpoint(state_dir)
    if options.final_epochs and not run.state["final_done"]:
        run.final_fine_tune()
        run.checkpoint(state_dir)

    result = AutoResult(None, run.state["history"], {}, run.state["stopped_because"], 0.0, model=run.model,
                        plan=make_plan(ctx.original_groups, run.total))
    if group.is_writer:
        source = checkpoint if checkpoint is not None else loaded.path
        result._writer = lambda directory: write_auto_bundle(run, loaded, source, directory, spec_sha)
        if output is not None:
            result.manifest, result.report = result._writer(output)
            result.output = output
            remove_state(state_dir)
    group.barrier()
    result.wall_seconds = time.perf_counter() - started
    return result


def _calibration(options: AutoOptions, task: Task, given: Given) -> CalibrationData:
    """Scoring data for a data-driven criterion: the task's calibration batches."""
    if given.task is None:
        return load_data(options.task)
    batches = tuple((x, y) for x, y in task.calibration_batches())
    if not batches:
        raise SpecError("prunectl.auto: the training data gave no batches to score channels on")
    return CalibrationData(batches, task.loss, "train_loader")
