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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..bundle.staging import check_output_path
from ..coupling.groups import build_groups
from ..criteria import get_criterion
from ..errors import SpecError
from ..loading.checkpoint import load_checkpoint
from ..loading.data import load_data
from ..loading.request import requested_input, requested_model, requested_spec
from ..models.inputs import make_inputs
from ..options import DEFAULT_CRITERION, AutoOptions, spec_overrides
from ..selection.per_layer import SelectOptions
from ..tasks import get_task
from ..tracing import trace_model
from ..training.distributed import from_environment
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


def _fingerprint(options: AutoOptions, checkpoint_sha: str, spec_sha: str | None, micro: int) -> dict[str, Any]:
    kept = asdict(options)
    for volatile in ("output", "resume", "budget_minutes", "threads", "max_steps", "onnx"):
        kept.pop(volatile)
    kept.update({"checkpoint_sha256": checkpoint_sha, "spec_sha256": spec_sha, "micro_batches": micro,
                 "spec": str(options.spec) if options.spec else None, "rates": list(options.rates)})
    return kept


def auto(checkpoint: str | Path, options: AutoOptions, events: Events | None = None) -> AutoResult:
    """Search per-layer widths for ``checkpoint`` on ``options.task``; write the bundle (rank 0)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if options.threads:
            torch.set_num_threads(options.threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        return _auto(checkpoint, options, events)
    finally:  # the caller's process settings, as they were
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _auto(checkpoint: str | Path, options: AutoOptions, events: Events | None) -> AutoResult:
    started = time.perf_counter()
    emit = events or (lambda _kind, _info: None)
    options.check()
    group = from_environment()
    micro = options.micro_batches or group.world
    output = Path(options.output) if options.output else Path(f"{Path(checkpoint).name.split('.')[0]}-auto")
    if group.is_writer:
        check_output_path(output)

    spec = requested_spec(options.spec, options)
    loaded = load_checkpoint(checkpoint, requested_model(spec, options.model))
    original = loaded.model.eval()
    input_spec = requested_input(spec, None, loaded, spec_given=options.spec is not None)
    if options.spec is None:
        spec = trace_model(original, input_spec.shape, dtype=input_spec.dtype,
                           model_ref=loaded.model_ref).spec.with_options(**spec_overrides(options))
    task = get_task(options.task)
    criterion = get_criterion(spec.criterion or DEFAULT_CRITERION)
    select = SelectOptions.from_spec(spec, criterion, rate=0.0)
    data = load_data(options.task) if criterion.needs_data else None
    ctx = S.Context(spec, criterion, select, data, make_inputs(input_spec, options.seed, model=original), options.seed)
    ctx.original_groups = build_groups(spec, original)

    spec_sha = spec.sha256
    fingerprint = _fingerprint(options, loaded.sha256, spec_sha, micro)
    state_dir = state_dir_for(output)
    saved = load_state(state_dir) if group.is_writer else None
    if saved is not None and not options.resume:
        raise SpecError(f"{state_dir}: holds an unfinished auto run; pass --resume to continue it, or remove it")
    saved = group.broadcast_object(saved, 0)
    run = SearchRun(ctx, task, options, group, micro, emit, original)
    run.input_spec = input_spec
    if saved is not None:
        state, weights = saved
        if state["fingerprint"] != fingerprint:
            raise SpecError(f"{state_dir}: was started with other inputs or options; remove it to start over")
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

    result = AutoResult(None, run.state["history"], {}, run.state["stopped_because"], 0.0)
    if group.is_writer:
        result.manifest, result.report = write_auto_bundle(run, loaded, checkpoint, output, spec_sha)
        result.output = output
        remove_state(state_dir)
    group.barrier()
    result.wall_seconds = time.perf_counter() - started
    return result
