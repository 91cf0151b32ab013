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
only rank 0 writes. The final bundle is written by ``bundle_files.write_bundle``, like ``prune``'s.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import api
from .. import layers as L
from ..bundle import check_output_path
from ..checkpoint import file_sha256, load_checkpoint
from ..criteria import get_criterion
from ..errors import SpecError
from ..finetune import FineTuneOptions, fine_tune, mix_seed
from ..groups import build_groups
from ..selection import SelectOptions
from ..tasks import get_task
from ..verify import TOLERANCE, make_inputs
from . import cac, netadapt
from . import history as H
from . import steps as S
from .distributed import Dist, from_environment
from .results import write_auto_bundle
from .state import load_state, remove_state, save_state, state_dir_for

Events = Callable[[str, dict[str, Any]], None]
FINAL_SEED = 1_000_003  # the final fine-tune's seed slot, apart from the step numbers


@dataclass(frozen=True)
class AutoOptions:
    task: str
    spec: str | Path | None = None
    model: str | None = None
    max_drop: float = 0.5  # accuracy points (the task metric's unit) below the original
    target_macs: float | None = None  # fraction of the original kept: NetAdapt mode
    target_params: float | None = None
    criterion: str | None = None
    epochs: int = 3  # retraining (CAC) / short fine-tune (NetAdapt) epochs per step
    final_epochs: int = 0  # a long fine-tune at the end (its last epoch is kept)
    early_stop: bool = True  # CAC: retraining stops once back within max_drop; False: all epochs, best kept
    budget_minutes: float | None = None
    max_steps: int = 1000  # CAC's max_search_times
    rates: tuple[float, ...] = cac.DEFAULT_RATES
    loss_margin: float = cac.LOSS_MARGIN
    step_fraction: float | None = None  # NetAdapt: resource saved per iteration, of the original
    round_to: int | None = None
    min_channels: int | None = None
    group_reduce: str | None = None
    output: str | Path | None = None
    onnx: bool = False
    resume: bool = False
    seed: int = 0
    micro_batches: int | None = None  # default: the number of processes
    threads: int | None = 1  # one thread: bit-identical results, resumable byte for byte


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


def _check(options: AutoOptions) -> None:
    if options.target_macs is not None and options.target_params is not None:
        raise SpecError("give one of --target-macs and --target-params, not both")
    for name in ("target_macs", "target_params"):
        value = getattr(options, name)
        if value is not None and not 0 < value <= 1:
            raise SpecError(f"--{name.replace('_', '-')}: expected a fraction kept in (0, 1], got {value}")
    if options.max_drop < 0:
        raise SpecError(f"--max-drop: expected a number >= 0, got {options.max_drop}")
    if options.epochs < 0 or options.final_epochs < 0 or options.max_steps < 0:
        raise SpecError("--epochs, --final-epochs and --max-steps must be >= 0")
    if not options.rates or any(not 0 <= r < 1 for r in options.rates):
        raise SpecError(f"--rates: expected numbers in [0, 1), got {list(options.rates)}")


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
    _check(options)
    group = from_environment()
    micro = options.micro_batches or group.world
    output = Path(options.output) if options.output else Path(f"{Path(checkpoint).name.split('.')[0]}-auto")
    if group.is_writer:
        check_output_path(output)

    prune_options = api.PruneOptions(spec=options.spec, model=options.model, criterion=options.criterion,
                                     round_to=options.round_to, min_channels=options.min_channels,
                                     group_reduce=options.group_reduce)
    spec = api._spec_with_options(prune_options)
    loaded = load_checkpoint(checkpoint, api._model_ref(spec, prune_options))
    original = loaded.model.eval()
    input_spec = api._input_spec(spec, prune_options, loaded)
    if options.spec is None:
        from ..tracing import trace_model

        spec = api._apply_options(trace_model(original, input_spec.shape, dtype=input_spec.dtype,
                                              model_ref=loaded.model_ref).spec, prune_options)
    task = get_task(options.task)
    criterion = get_criterion(spec.criterion or "l1")
    select = SelectOptions(rate=0.0, round_to=spec.round_to or 1, min_channels=spec.min_channels or 1,
                           group_reduce=spec.group_reduce or "mean", normalise=not criterion.self_normalised)
    data = None
    if criterion.needs_data:
        from ..data import load_data

        data = load_data(options.task)
    tolerance = TOLERANCE.get(input_spec.dtype, TOLERANCE["float32"])
    ctx = S.Context(spec, criterion, select, data, make_inputs(input_spec, options.seed), tolerance, options.seed)
    ctx.original_groups = build_groups(spec, original)

    spec_sha = file_sha256(options.spec) if options.spec else None
    fingerprint = _fingerprint(options, loaded.sha256, spec_sha, micro)
    state_dir = state_dir_for(output)
    saved = load_state(state_dir) if group.is_writer else None
    if saved is not None and not options.resume:
        raise SpecError(f"{state_dir}: holds an unfinished auto run; pass --resume to continue it, or remove it")
    saved = group.broadcast_object(saved, 0)
    run = _Run(ctx, task, options, group, micro, emit, original)
    run.input_json = input_spec.to_json()
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


class _Run:
    """The search state (JSON-able ``state``) and the current model."""

    def __init__(self, ctx: S.Context, task, options: AutoOptions, group: Dist, micro: int, emit: Events,
                 original: torch.nn.Module):
        self.ctx, self.task, self.options, self.group, self.micro, self.emit = ctx, task, options, group, micro, emit
        self.original = original
        self.kind = "macs" if options.target_macs is not None else "params" if options.target_params is not None else None
        self.target = options.target_macs if options.target_macs is not None else options.target_params
        self.model = original
        self.total: S.Kept = S.unchanged(ctx.original_groups)
        self.state: dict[str, Any] = {}
        self.input_json: dict[str, Any] = {}

    # -- state ---------------------------------------------------------------------------------
    def start(self, fingerprint: dict[str, Any]) -> None:
        self.model = S.rebuild_current(self.ctx, self.original, self.total, S.weights_of(self.original))
        accuracy = float(self.task.metric(self.model))
        sizes = S.measure(self.model, self.ctx.inputs[0])
        self.state = {"fingerprint": fingerprint, "step": 0, "done": False, "stopped_because": None,
                      "final_done": False, "elapsed": 0.0, "original_accuracy": accuracy, "original_sizes": sizes,
                      "worst_soft_vs_hard": 0.0, "trials": [],
                      "history": [H.entry(0, sizes, accuracy, S.widths(self.ctx, self.model), "original")]}
        if self.kind is None:
            loss, sens = cac.sensitivities(self.model, self.task, self.ctx.original_groups)
            self.state["cac"] = {"loss_before": loss, "loss_after": loss, "sensitivities": sens,
                                 "upper_bound": None, "limit": None, "last_accepted": False, "rejected": []}

    def resume(self, state: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        self.state = state
        self.total = [None if k is None else torch.tensor(k, dtype=torch.long) for k in state["kept"]]
        self.model = S.rebuild_current(self.ctx, self.original, self.total, weights)

    def checkpoint(self, directory: Path) -> None:
        self.state["kept"] = [None if k is None else k.tolist() for k in self.total]
        if self.group.is_writer:
            save_state(directory, self.state, S.weights_of(self.model))
        self.group.barrier()

    def _accept(self, model: torch.nn.Module, kept: S.Kept, error: float, accuracy: float, phase: str,
                **extra: Any) -> None:
        self.model, self.total = model, S.compose(self.total, kept)
        self.state["worst_soft_vs_hard"] = max(self.state["worst_soft_vs_hard"], error)
        history = self.state["history"]
        history.append(H.entry(len(history), S.measure(model, self.ctx.inputs[0]), accuracy,
                               S.widths(self.ctx, model), phase, iteration=self.state["step"], **extra))
        self.emit("accepted", history[-1])

    # -- one search step -----------------------------------------------------------------------
    def step(self) -> None:
        self.state["step"] += 1
        torch.manual_seed(mix_seed(self.options.seed, self.state["step"]))
        (self._netadapt_step if self.kind else self._cac_step)()

    def _cac_step(self) -> None:
        ctx, st, options = self.ctx, self.state["cac"], self.options
        groups = S.groups_of(ctx, self.model)
        scores = S.scores_of(ctx, self.model, groups)
        modules = dict(self.model.named_modules())
        numels = [None if s is None else sum(L.weight_of(modules[m.module]).numel() for m in g.members if m.scored)
                  for g, s in zip(groups, scores)]
        raw = cac.thresholds(st, numels, options.loss_margin)
        if st["upper_bound"] is None or st["last_accepted"]:
            st["limit"] = cac.upper_bound_limit(ctx, self.model, groups, raw, options.rates, scores)
            if st["upper_bound"] is None:
                st["upper_bound"] = st["limit"]
        ths = cac.scale_thresholds(st["sensitivities"], raw, st["upper_bound"])
        choices = [None if s is None else cac.choose_rate(ctx, self.model, g, s, options.rates, t)
                   for g, s, t in zip(groups, scores, ths)]
        live = [(c, t) for c, t in zip(choices, ths) if c is not None]
        rates = {g.name: c.rate for g, c in zip(groups, choices) if c is not None}
        widths = {g.name: len(c.kept) for g, c in zip(groups, choices) if c is not None}
        trial: dict[str, Any] = {"iteration": self.state["step"], "rates": rates, "widths": widths}
        self.state["trials"].append(trial)
        if all(c.rate == 0 for c, _ in live):
            self.state.update(done=True, stopped_because="no layer can be cut within its error threshold")
            return
        key = ",".join(str(w) for w in widths.values())
        floor = self.state["original_accuracy"] - options.max_drop
        if key in st["rejected"]:
            accepted, trial["note"] = False, "rejected before from this model; not retrained"
        else:
            kept = [None if c is None else c.kept for c in choices]
            candidate, error = S.cut(ctx, self.model, groups, kept)
            pruned_accuracy = float(self.task.metric(candidate))
            log, accuracy = self._retrain(candidate, options.epochs, mix_seed(options.seed, self.state["step"]),
                                          floor if options.early_stop else None, pruned_accuracy)
            accepted = accuracy >= floor - 1e-9
            trial.update(pruned_accuracy=pruned_accuracy, accuracy=accuracy, epochs=len(log), log=log)
            if accepted:
                self._accept(candidate, kept, error, accuracy, "cac", rates=rates, epochs=len(log),
                             pruned_accuracy=round(pruned_accuracy, 6))
                st["loss_after"], st["sensitivities"] = cac.sensitivities(self.model, self.task, S.groups_of(ctx, self.model))
                st["rejected"] = []
        trial["accepted"] = accepted
        diffs = [c.inc if accepted else c.dec for c, _ in live]
        st["upper_bound"] = cac.update_upper_bound(accepted, diffs, [t for _, t in live], st["upper_bound"], st["limit"])
        st["last_accepted"] = accepted
        if not accepted:
            st["rejected"].append(key)
        self.emit("step", trial)
        if st["upper_bound"] < 0:
            self.state.update(done=True, stopped_because="the threshold bound fell below zero")

    def _netadapt_step(self) -> None:
        ctx, options = self.ctx, self.options
        original = self.state["original_sizes"][self.kind]
        goal = int(self.target * original)
        now = S.measure(self.model, ctx.inputs[0])[self.kind]
        if now <= goal:
            self.state["step"] -= 1
            self.state.update(done=True, stopped_because=f"target reached ({self.kind} {now} <= {goal})")
            return
        fraction = options.step_fraction or max(0.01, (1 - self.target) / 10)
        delta = netadapt.step_reduction(self.state["step"] - 1, original, now, goal, fraction)
        groups = S.groups_of(ctx, self.model)
        found = netadapt.proposals(ctx, self.model, groups, S.scores_of(ctx, self.model, groups), self.kind, delta)
        if not found:
            self.state.update(done=True, stopped_because="no layer can be cut further (pinned, --min-channels)")
            return
        best, winner, results = netadapt.evaluate_proposals(ctx, self.model, groups, found, self.task, options.epochs,
                                                            self.micro, self.state["step"], self.group, self.emit)
        chosen = results[best]
        kept = [None] * len(groups)
        kept[found[best]["group"]] = found[best]["kept"]
        self.state["trials"].append({"iteration": self.state["step"], "delta": delta, "proposals": results,
                                     "chosen": chosen["layer"]})
        self._accept(winner, kept, chosen["soft_vs_hard_max_abs"], chosen["accuracy"], "netadapt",
                     layer=chosen["layer"], rate=chosen["rate"], epochs=chosen["epochs"],
                     pruned_accuracy=round(chosen["pruned_accuracy"], 6))
        self.emit("step", self.state["trials"][-1])

    def _retrain(self, model: torch.nn.Module, epochs: int, seed: int, floor: float | None,
                 accuracy: float) -> tuple[list[dict[str, Any]], float]:
        """Fine-tune ``model`` in place: with ``floor``, stop at the first epoch back within it (CAC);
        without, run every epoch and keep the best validation epoch (epoch 0: as given; ties: the later)."""
        best = {"accuracy": accuracy, "weights": S.weights_of(model), "stopped": False}

        def watch(entry: dict[str, Any]) -> bool:
            if floor is not None and entry["accuracy"] >= floor - 1e-9:
                best.update(accuracy=entry["accuracy"], stopped=True)
                return True
            # ties go to the later epoch: with a decaying learning rate it is the settled one (a
            # saturated validation metric would otherwise keep the weights from before training)
            if entry["accuracy"] >= best["accuracy"]:
                best.update(accuracy=entry["accuracy"], weights=S.weights_of(model))
            return False

        options = FineTuneOptions(epochs, seed, self.micro)
        log = fine_tune(model, self.task, options, self.group, self.emit, stop_when=watch)
        if not best["stopped"]:
            model.load_state_dict(best["weights"])
        return log, best["accuracy"]

    def final_fine_tune(self) -> None:
        """The long fine-tune (NetAdapt's last phase), kept as it ends: the cosine decay's last
        epoch is the settled one, and picking the best of many epochs on a few hundred
        validation images tunes to them (on digits it lost held-out accuracy)."""
        before = float(self.task.metric(self.model))
        options = FineTuneOptions(self.options.final_epochs, mix_seed(self.options.seed, FINAL_SEED), self.micro)
        log = fine_tune(self.model, self.task, options, self.group, self.emit)
        accuracy = float(log[-1]["accuracy"]) if log else before
        self.state["final_done"] = True
        self.state["final_log"] = log
        history = self.state["history"]
        history.append(H.entry(len(history), S.measure(self.model, self.ctx.inputs[0]), accuracy,
                               S.widths(self.ctx, self.model), "final-finetune", epochs=len(log),
                               note=f"validation {before:.2f} before, last epoch kept"))
        self.emit("accepted", history[-1])
