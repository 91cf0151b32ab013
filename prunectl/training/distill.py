"""Recovery by distillation: train the pruned model toward the original's logits (Hinton et al. 2015, Minitron).

Loss: ``KL(teacher || student)`` of the output distributions at temperature ``T`` (times ``T**2``,
so the gradient scale does not depend on T), summed over the classes (or the vocabulary) and
averaged over every example (or token) of the batch, plus ``task_loss_weight`` times the loss on
the true labels (the task's loss, or the next-token loss of a language model). Minitron found
logit distillation alone recovers an LLM best, so the weight defaults to 0.

Batches come from ``PassBatches``: pass after pass over the data, each pass in an order of its
own seeded from ``(seed, pass)``, so the batch of a step is a function of the step alone (a
resumed run picks up where it stopped without replaying anything). Each step's gradient is
``finetune.accumulate_gradients``': the batch split into ``micro_batches`` parts, summed in a
fixed order in float64, part ``i`` computed by torchrun rank ``i % world``, every part seeding
torch from ``(seed, step, part)``: N processes compute exactly what one computes with
``micro_batches=N``, and the same command gives the same weights. The teacher runs without
gradients and never changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SpecError
from ..models.device import device_of, to_device
from ..options import DEFAULT_DISTILL_LR
from ..seeding import mix_seed
from ..tasks import Batch
from .distributed import Dist
from .finetune import PartLoss, accumulate_gradients

LOG_ENTRIES = 20  # the log keeps about this many steps (and the last)

Events = Callable[[str, dict[str, Any]], None]
LabelLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (student logits, labels) -> mean loss
AfterStep = Callable[[int, list[dict[str, Any]]], None]  # (steps done, the log so far)


@dataclass(frozen=True)
class DistillOptions:
    steps: int
    lr: float | None = DEFAULT_DISTILL_LR  # None: the task optimizer's own (distill_task.py)
    temperature: float = 1.0
    seed: int = 0
    task_loss_weight: float = 0.0
    micro_batches: int = 1  # parts per batch; torchrun ranks share them (see the module docstring)

    def check(self, group: Dist = Dist()) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise SpecError(f"--steps: expected an integer >= 1, got {self.steps!r}")
        if (self.lr is not None and not self.lr > 0) or not self.temperature > 0:
            raise SpecError(f"--lr and --temperature must be > 0, got {self.lr} and {self.temperature}")
        if not self.task_loss_weight >= 0:
            raise SpecError(f"--task-loss-weight: expected a number >= 0, got {self.task_loss_weight}")
        if self.micro_batches < 1 or self.micro_batches % group.world:
            raise SpecError(f"--micro-batches {self.micro_batches}: must be a positive multiple of the number of "
                            f"processes ({group.world})")


@dataclass
class Training:
    """The optimizer and its learning-rate schedule (None: a constant rate); both resumable."""

    optimizer: torch.optim.Optimizer
    scheduler: Any = None


class PassBatches:
    """``batches_of_pass(p)``: pass ``p``'s batches, the same number every pass; ``at(step)``: that step's."""

    def __init__(self, batches_of_pass: Callable[[int], list[Batch]], source: str):
        self.batches_of_pass, self.source = batches_of_pass, source
        self._pass, self._batches = 0, batches_of_pass(0)
        if not self._batches:
            raise SpecError(f"{source}: no batches to distil on")
        self.per_pass = len(self._batches)

    def at(self, step: int) -> Batch:
        rounds, index = divmod(step, self.per_pass)
        if rounds != self._pass:
            self._pass, self._batches = rounds, self.batches_of_pass(rounds)
            if len(self._batches) != self.per_pass:
                raise SpecError(f"{self.source}: pass {rounds} has {len(self._batches)} batches, the first "
                                f"{self.per_pass}; distillation steps need the same number every pass")
        return self._batches[index]


def shuffled_each_pass(batches: list[Batch], seed: int) -> Callable[[int], list[Batch]]:
    """Fixed batches (a text's windows), each pass in an order drawn from ``(seed, pass)``."""
    def of_pass(rounds: int) -> list[Batch]:
        order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(mix_seed(seed, rounds)))
        return [batches[i] for i in order.tolist()]
    return of_pass


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits on ``x``, sent to the model's device first (``--device``: the batches stay on the CPU)."""
    x = to_device(x, device_of(model))
    # token ids into a transformers language model by name (no KV cache to build); images (a CNN,
    # timm's or transformers' ViT, whose first argument is pixel_values) positionally
    language_model = hasattr(model, "config") and not x.is_floating_point()
    output = model(input_ids=x, use_cache=False) if language_model else model(x)
    return getattr(output, "logits", output)


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over examples (tokens) of KL(teacher || student) at ``temperature``, times temperature squared."""
    classes = student_logits.shape[-1]
    student = F.log_softmax(student_logits.reshape(-1, classes).float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.reshape(-1, classes).float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature ** 2


def distillation_loss(teacher: nn.Module, temperature: float, task_loss_weight: float,
                      label_loss: LabelLoss | None) -> PartLoss:
    """A part's loss: the KL to the teacher's logits, plus the weighted loss on the labels."""
    if task_loss_weight and label_loss is None:
        raise SpecError("--task-loss-weight: this data has no labels to add a loss on")

    def loss_of(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = logits_of(teacher, x)
        logits = logits_of(student, x)
        loss = kl_loss(logits, target, temperature)
        if task_loss_weight:
            loss = loss + task_loss_weight * label_loss(logits, to_device(y, logits.device))
        return loss
    return loss_of


@torch.no_grad()
def mean_kl(student: nn.Module, teacher: nn.Module, inputs: list[torch.Tensor], temperature: float = 1.0) -> float:
    """The KL over all ``inputs``, weighted by examples (tokens): before and after, for the report."""
    student.eval()
    total, count = 0.0, 0
    for x in inputs:
        logits = logits_of(student, x)
        rows = logits.numel() // logits.shape[-1]
        total += float(kl_loss(logits, logits_of(teacher, x), temperature)) * rows
        count += rows
    return total / count


def distill(student: nn.Module, teacher: nn.Module, batches: PassBatches, training: Training,
            options: DistillOptions, label_loss: LabelLoss | None = None, group: Dist = Dist(),
            events: Events | None = None, start: int = 0, log: list[dict[str, Any]] | None = None,
            after_step: AfterStep | None = None) -> list[dict[str, Any]]:
    """Train ``student`` in place toward ``teacher``, steps ``start`` to ``options.steps``; a log of some steps.

    ``start``/``log``: where a resumed run stands (its optimizer and schedule already restored);
    ``after_step(steps_done, log)`` runs after every step (the checkpoints)."""
    options.check(group)
    emit = events or (lambda _kind, _info: None)
    teacher.eval()
    params = [p for p in student.parameters() if p.requires_grad]
    loss_of = distillation_loss(teacher, options.temperature, options.task_loss_weight, label_loss)
    every = max(1, options.steps // LOG_ENTRIES)
    key = "kl" if not options.task_loss_weight else "loss"
    log = list(log or [])
    student.train()
    for step in range(start, options.steps):
        x, y = batches.at(step)
        lr = float(training.optimizer.param_groups[0]["lr"])
        summed = accumulate_gradients(student, loss_of, params, x, y, options.micro_batches, group,
                                      mix_seed(options.seed, step))
        training.optimizer.step()
        if training.scheduler is not None:
            training.scheduler.step()
        if step % every == 0 or step == options.steps - 1:
            entry = {"step": step + 1, "lr": lr, key: summed / len(y)}
            log.append(entry)
            emit("step", entry)
        if after_step is not None:
            after_step(step + 1, log)
    student.eval()
    return log
