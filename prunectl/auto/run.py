"""One ``auto`` run's search: its JSON-able state, the current model, and one step of CAC or NetAdapt.

``search.auto`` sets the run up and loops; each ``step`` cuts, retrains and accepts or rejects
through ``steps`` (the core stages), so every accepted step is verified like ``prunectl prune``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..formats import history as H
from ..formats.spec import InputSpec
from ..layers import kinds as L
from ..options import AutoOptions
from ..seeding import mix_seed
from ..training.distributed import Dist
from ..training.finetune import FineTuneOptions, fine_tune
from . import cac, fine_steps, netadapt
from . import steps as S
from .state import save_state

Events = Callable[[str, dict[str, Any]], None]
FINAL_SEED = 1_000_003  # the final fine-tune's seed slot, apart from the step numbers


class SearchRun:
    """The search state (JSON-able ``state``) and the current model."""

    def __init__(self, ctx: S.Context, task, options: AutoOptions, group: Dist, micro: int, emit: Events,
                 original: torch.nn.Module):
        self.ctx, self.task, self.options, self.group, self.micro, self.emit = ctx, task, options, group, micro, emit
        self.original = original
        self.kind = ("macs" if options.target_macs is not None else "params" if options.target_params is not None
                     else None)
        self.target = options.target_macs if options.target_macs is not None else options.target_params
        self.model = original
        self.total: S.Kept = S.unchanged(ctx.original_groups)
        self.state: dict[str, Any] = {}
        self.input_spec: InputSpec | None = None  # set by search.auto

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
            loss, sens = cac.sensitivities(self.model, self.task, self.ctx.original_groups, self.options.calc_iter,
                                           self.ctx.device)
            self.state["cac"] = {"loss_before": loss, "loss_after": loss, "sensitivities": sens,
                                 "upper_bound": None, "limit": None, "last_accepted": False, "rejected": []}

    def resume(self, state: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        self.state = state
        self.total = [None if k is None else torch.tensor(k, dtype=torch.long) for k in state["kept"]]
        self.model = S.rebuild_current(self.ctx, self.original, self.total, weights)

    def checkpoint(self, directory: Path | None) -> None:
        """Save the state to ``directory`` (rank 0); ``None``: an in-memory run with no output, not resumable."""
        self.state["kept"] = [None if k is None else k.tolist() for k in self.total]
        if self.group.is_writer and directory is not None:
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
        if self.kind:
            self._netadapt_step()
        elif self.state["cac"].get("fine") is not None:
            self._fine_step()
        else:
            self._cac_step()

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
            if st["upper_bound"] is None:  # --trust-radius: the caller's start instead of CAC's computed one
                st["upper_bound"] = st["limit"] if options.trust_radius is None else options.trust_radius
        ths = cac.scale_thresholds(st["sensitivities"], raw, st["upper_bound"])
        choices = [None if s is None else cac.choose_rate(ctx, self.model, g, s, options.rates, t)
                   for g, s, t in zip(groups, scores, ths)]
        live = [(c, t) for c, t in zip(choices, ths) if c is not None]
        rates = {g.name: c.rate for g, c in zip(groups, choices) if c is not None}
        widths = {g.name: len(c.kept) for g, c in zip(groups, choices) if c is not None}
        trial: dict[str, Any] = {"iteration": self.state["step"], "rates": rates, "widths": widths}
        self.state["trials"].append(trial)
        if all(c.rate == 0 for c, _ in live):
            # the thresholds are spent, the --max-drop budget may not be: finer steps (fine_steps.py)
            trial["note"] = "no layer can be cut within its error threshold; finer steps follow"
            st["fine"] = fine_steps.start(groups, options.rates)
            self._fine_step()
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
                st["loss_after"], st["sensitivities"] = cac.sensitivities(self.model, self.task,
                                                                          S.groups_of(ctx, self.model),
                                                                          options.calc_iter, ctx.device)
                st["rejected"] = []
        trial["accepted"] = accepted
        diffs = [c.inc if accepted else c.dec for c, _ in live]
        st["upper_bound"] = cac.update_upper_bound(accepted, diffs, [t for _, t in live], st["upper_bound"],
                                                   st["limit"], options.scaling_factor)
        st["last_accepted"] = accepted
        if not accepted:
            st["rejected"].append(key)
        self.emit("step", trial)
        if st["upper_bound"] < 0:
            trial["note"] = "the threshold bound fell below zero; finer steps follow"
            st["fine"] = fine_steps.start(groups, options.rates)

    def _fine_step(self) -> None:
        """One step of accuracy mode's finishing phase (fine_steps.py): one group, its own rate."""
        ctx, st, options = self.ctx, self.state["cac"], self.options
        groups = S.groups_of(ctx, self.model)
        scores = S.scores_of(ctx, self.model, groups)
        chosen = fine_steps.choose(ctx, self.model, groups, scores, st["fine"])
        if chosen is None:
            self.state.update(done=True, stopped_because="no layer can be cut within --max-drop (its smallest cut "
                                                         "was rejected for every layer)")
            return
        index, group_kept, minimal = chosen
        kept: S.Kept = [None] * len(groups)
        kept[index] = group_kept
        rate = round(1 - len(group_kept) / groups[index].size, 6)
        trial: dict[str, Any] = {"iteration": self.state["step"], "phase": "fine", "layer": groups[index].name,
                                 "rate": rate, "widths": {groups[index].name: len(group_kept)}}
        self.state["trials"].append(trial)
        floor = self.state["original_accuracy"] - options.max_drop
        candidate, error = S.cut(ctx, self.model, groups, kept)
        pruned_accuracy = float(self.task.metric(candidate))
        # every epoch, the best kept (not CAC's stop at the floor): a model left just above the floor has no
        # room for the next cut, which made a looser budget end at a bigger model (fine_steps.py)
        log, accuracy = self._retrain(candidate, options.epochs, mix_seed(options.seed, self.state["step"]), None,
                                      pruned_accuracy)
        accepted = accuracy >= floor - 1e-9
        trial.update(pruned_accuracy=pruned_accuracy, accuracy=accuracy, epochs=len(log), log=log, accepted=accepted)
        if accepted:
            self._accept(candidate, kept, error, accuracy, "cac-fine", layer=groups[index].name, rate=rate,
                         epochs=len(log), pruned_accuracy=round(pruned_accuracy, 6))
        fine_steps.record(st["fine"], index, minimal, accepted)
        self.emit("step", trial)

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
                                                            self.micro, self.state["step"], self.group, self.emit,
                                                            lr=options.lr)
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

        options = FineTuneOptions(epochs, seed, self.micro, lr=self.options.lr, device=self.ctx.device)
        log = fine_tune(model, self.task, options, self.group, self.emit, stop_when=watch)
        if not best["stopped"]:
            model.load_state_dict(best["weights"])
        return log, best["accuracy"]

    def final_fine_tune(self) -> None:
        """The long fine-tune (NetAdapt's last phase), kept as it ends: the cosine decay's last
        epoch is the settled one, and picking the best of many epochs on a few hundred
        validation images tunes to them (on digits it lost held-out accuracy)."""
        before = float(self.task.metric(self.model))
        options = FineTuneOptions(self.options.final_epochs, mix_seed(self.options.seed, FINAL_SEED), self.micro,
                                  lr=self.options.lr, device=self.ctx.device)
        log = fine_tune(self.model, self.task, options, self.group, self.emit)
        accuracy = float(log[-1]["accuracy"]) if log else before
        self.state["final_done"] = True
        self.state["final_log"] = log
        history = self.state["history"]
        history.append(H.entry(len(history), S.measure(self.model, self.ctx.inputs[0]), accuracy,
                               S.widths(self.ctx, self.model), "final-finetune", epochs=len(log),
                               note=f"validation {before:.2f} before, last epoch kept"))
        self.emit("accepted", history[-1])
