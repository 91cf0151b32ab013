"""Recovery by distillation (Minitron): train the pruned language model toward the original's logits.

Loss: ``KL(teacher || student)`` of the next-token distributions at temperature ``T`` (times
``T**2``, Hinton et al. 2015, so the gradient scale does not depend on T), summed over the
vocabulary and averaged over every token of the batch; Minitron found logit distillation alone
better than adding the LM loss, so there is none. AdamW without weight decay at a constant
``lr`` after a linear warm-up over the first 10 % of the steps. The batches are the calibration
windows, in an order reshuffled from ``(seed, pass)`` each time all have been seen; every step
seeds torch from ``(seed, step)``: the same run gives the same weights. One process; the teacher
runs without gradients and never changes.
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

WARMUP_FRACTION = 0.1
LOG_ENTRIES = 20  # the log keeps about this many steps (and the last)

Events = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class DistillOptions:
    steps: int
    lr: float = DEFAULT_DISTILL_LR
    temperature: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise SpecError(f"--steps: expected an integer >= 1, got {self.steps!r}")
        if not self.lr > 0 or not self.temperature > 0:
            raise SpecError(f"--lr and --temperature must be > 0, got {self.lr} and {self.temperature}")


def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The model's logits on ``ids``, sent to the model's device first (``--device``: the batches stay on the CPU)."""
    ids = to_device(ids, device_of(model))
    output = model(input_ids=ids, use_cache=False) if hasattr(model, "config") else model(ids)
    return getattr(output, "logits", output)


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over tokens of KL(teacher || student) at ``temperature``, times temperature squared."""
    vocabulary = student_logits.shape[-1]
    student = F.log_softmax(student_logits.reshape(-1, vocabulary).float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.reshape(-1, vocabulary).float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature ** 2


@torch.no_grad()
def mean_kl(student: nn.Module, teacher: nn.Module, batches: list[torch.Tensor], temperature: float = 1.0) -> float:
    """The distillation loss over all ``batches``, token-weighted: before and after, for the report."""
    student.eval()
    total, tokens = 0.0, 0
    for ids in batches:
        total += float(kl_loss(logits_of(student, ids), logits_of(teacher, ids), temperature)) * ids.numel()
        tokens += ids.numel()
    return total / tokens


def distill(student: nn.Module, teacher: nn.Module, batches: list[torch.Tensor], options: DistillOptions,
            events: Events | None = None) -> list[dict[str, Any]]:
    """Train ``student`` in place toward ``teacher`` for ``options.steps`` steps; a log of some steps."""
    options.check()
    if not batches:
        raise SpecError("distillation needs at least one batch of token ids")
    emit = events or (lambda _kind, _info: None)
    teacher.eval()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=0.0)
    warmup = max(1, int(options.steps * WARMUP_FRACTION))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    every = max(1, options.steps // LOG_ENTRIES)
    log: list[dict[str, Any]] = []
    order: list[int] = []
    student.train()
    for step in range(options.steps):
        if not order:  # a new pass over the windows, in an order of its own
            generator = torch.Generator().manual_seed(mix_seed(options.seed, step // len(batches)))
            order = torch.randperm(len(batches), generator=generator).tolist()
        ids = batches[order.pop(0)]
        torch.manual_seed(mix_seed(options.seed, step))  # dropout, where a model has any
        with torch.no_grad():
            target = logits_of(teacher, ids)
        loss = kl_loss(logits_of(student, ids), target, options.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = float(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        if step % every == 0 or step == options.steps - 1:
            entry = {"step": step + 1, "lr": lr, "kl": float(loss.detach())}
            log.append(entry)
            emit("step", entry)
    student.eval()
    return log
