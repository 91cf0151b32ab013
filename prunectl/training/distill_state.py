"""``finetune --distill``'s checkpoints: ``OUT.distill-state/state.pt`` every K steps, resumed by the same command.

The file is training/run_state.py's (``auto`` writes the same one): the JSON state (the run's
fingerprint, the steps done, the log so far), the student's weights (buffers included) and the
optimizer's and learning-rate scheduler's state_dicts. The batch of a step and every random
number are functions of ``(seed, step)`` (distill.py), so weights, optimizer, schedule and step
are all a run needs to go on exactly as if it had never stopped: the final bundle is byte for
byte the uninterrupted run's. What was computed before training (KL, accuracy, perplexity before)
is computed again from the input bundle, which a run never changes until it ends.

The state sits beside the output, as ``auto``'s does: the output is replaced atomically at the end
(and by default it is the input bundle itself, whose checksums a file inside would break). A state
whose fingerprint differs from this run's is refused (exit 3) naming the first difference; the
state is removed once the bundle is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from ..errors import SpecError
from .distill import AfterStep, DistillOptions, Events, LabelLoss, PassBatches, Training, distill
from .distributed import Dist
from .run_state import SavedState, first_difference, load_state, remove_state, save_state

STATE_SUFFIX = ".distill-state"
WHAT = "distillation state"


def state_dir_for(output: Path) -> Path:
    return output.with_name(output.name + STATE_SUFFIX)


class Checkpoints:
    """Where a distillation's state lives, when it is saved, and what it must match to resume."""

    def __init__(self, output: Path, fingerprint: dict[str, Any], every: int, steps: int, group: Dist):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise SpecError(f"--checkpoint-every: expected an integer >= 0 (0: never), got {every!r}")
        self.directory, self.fingerprint = state_dir_for(output), fingerprint
        self.every, self.steps, self.group = every, steps, group

    def saved(self) -> SavedState | None:
        """The state a killed run with the same arguments left (rank 0 reads it, every rank gets it)."""
        saved = load_state(self.directory, WHAT) if self.group.is_writer else None
        saved = self.group.broadcast_object(saved, 0)
        if saved is None:
            return None
        differs = first_difference(saved.data.get("fingerprint", {}), self.fingerprint)
        if differs is not None:
            raise SpecError(f"{self.directory}: holds a distillation started with other arguments ({differs}); "
                            f"rerun it with those, or remove {self.directory} to start over")
        return saved

    def resume(self, saved: SavedState, student: nn.Module, training: Training) -> tuple[int, list[dict[str, Any]]]:
        """Put the saved weights, optimizer and schedule back; (steps done, log so far)."""
        student.load_state_dict(saved.weights, strict=True)
        training.optimizer.load_state_dict(saved.tensors["optimizer"])
        if training.scheduler is not None:
            training.scheduler.load_state_dict(saved.tensors["scheduler"])
        return int(saved.data["step"]), list(saved.data["log"])

    def after_step(self, student: nn.Module, training: Training) -> AfterStep:
        def save(done: int, log: list[dict[str, Any]]) -> None:
            if self.every and done % self.every == 0 and done < self.steps and self.group.is_writer:
                tensors = {"optimizer": training.optimizer.state_dict()}
                if training.scheduler is not None:
                    tensors["scheduler"] = training.scheduler.state_dict()
                data = {"fingerprint": self.fingerprint, "step": done, "log": log}
                save_state(self.directory, SavedState(data, student.state_dict(), tensors), WHAT)
        return save

    def finish(self) -> None:
        """The bundle is written: the state has done its job."""
        if self.group.is_writer:
            remove_state(self.directory)


def resumable_distill(student: nn.Module, teacher: nn.Module, batches: PassBatches,
                      make_training: Callable[[list[nn.Parameter]], Training], options: DistillOptions,
                      checkpoints: Checkpoints, saved: SavedState | None, label_loss: LabelLoss | None = None,
                      events: Events | None = None) -> list[dict[str, Any]]:
    """``distill`` from ``saved`` (``checkpoints.saved()``, asked before any work) when there is one,
    saving every ``checkpoints.every`` steps.

    The student must already be where it trains (``--device``): the optimizer's state is put
    back onto its parameters' device."""
    training = make_training([p for p in student.parameters() if p.requires_grad])
    start, log = checkpoints.resume(saved, student, training) if saved is not None else (0, [])
    if saved is not None and events is not None and checkpoints.group.is_writer:
        events("resumed", {"step": start, "steps": options.steps, "state": str(checkpoints.directory)})
    return distill(student, teacher, batches, training, options, label_loss, checkpoints.group, events,
                   start, log, checkpoints.after_step(student, training))
