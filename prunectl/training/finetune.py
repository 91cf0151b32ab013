"""Fine-tuning a pruned model with a task's data, loss and optimizer.

The **hard** (rebuilt, narrower) model is fine-tuned, not the masked soft one: it is the model
that ships, training it costs what the pruned model costs, and no mask has to be re-applied
after every optimizer step (a momentum or weight-decay update would revive masked weights).

Defaults when the task does not supply them (see ``prunectl.tasks``): SGD with momentum 0.9,
lr 0.01, weight decay 5e-4 and a cosine decay of the learning rate to 0 over all iterations
of the fine-tune (each fine-tune starts afresh, so a short retrain between pruning steps ends
at a small learning rate); the training batches are the task's calibration batches,
reshuffled every epoch from ``(seed, epoch)``.

Determinism and several processes: every batch is split into ``micro_batches`` parts, each
part's gradient is computed alone (its loss weighted by its share of the batch) and the parts
are summed in a fixed order in float64. Under torchrun, part ``i`` is computed by rank
``i % world``; the parts are gathered and summed in the same order, so N processes compute
exactly what one process computes with ``micro_batches=N``. Norm-layer running statistics
follow part 0, as DistributedDataParallel's ``broadcast_buffers`` does; every part draws its
random numbers (dropout) from a seed of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import SpecError
from ..models.device import fed_on, on_device
from ..options import DEFAULT_FINETUNE_EPOCHS
from ..seeding import mix_seed
from ..tasks import Batch, Task
from .device_task import on_device_task
from .distributed import Dist

DEFAULT_LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4

Events = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class FineTuneOptions:
    epochs: int = DEFAULT_FINETUNE_EPOCHS
    seed: int = 0
    micro_batches: int = 1  # parts per batch; torchrun ranks share them (see module docstring)
    lr: float | None = None  # None: DEFAULT_LR for prunectl's SGD, the task optimizer's own lr
    device: torch.device | None = None  # --device: the model trains there (None: where it is, the CPU)


def check_options(options: FineTuneOptions, group: Dist) -> None:
    if options.epochs < 0:
        raise SpecError(f"--epochs: expected an integer >= 0, got {options.epochs}")
    if options.micro_batches < 1:
        raise SpecError(f"--micro-batches: expected an integer >= 1, got {options.micro_batches}")
    if options.micro_batches % group.world:
        raise SpecError(f"--micro-batches {options.micro_batches}: must be a multiple of the number of "
                        f"processes ({group.world})")


def training_batches(task: Task, epoch: int, seed: int) -> list[Batch]:
    """The task's training batches for ``epoch`` (or its calibration batches, reshuffled)."""
    own = getattr(task, "training_batches", None)
    if callable(own):
        batches = list(own(epoch, seed))
    else:
        given = list(task.calibration_batches())
        if not given:
            raise SpecError("the task gave no calibration batches to fine-tune on")
        inputs = torch.cat([x for x, _ in given])
        targets = torch.cat([y for _, y in given])
        order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(mix_seed(seed, epoch)))
        batches = [(inputs[idx], targets[idx]) for idx in order.split(max(1, len(given[0][1])))]
    if not batches:
        raise SpecError("the task gave no training batches")
    return batches


def make_optimizer(task: Task, params: list[nn.Parameter], iterations: int, lr: float | None = None
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    own = getattr(task, "optimizer", None)
    if callable(own):
        optimizer = own(params)
        if lr is not None:  # asked for by name (--lr): it beats the task's choice, in every param group
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
        return optimizer, None
    optimizer = torch.optim.SGD(params, lr=DEFAULT_LR if lr is None else lr, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, iterations))


def fine_tune(model: nn.Module, task: Task, options: FineTuneOptions, group: Dist = Dist(),
              events: Events | None = None, stop_when: Callable[[dict[str, Any]], bool] | None = None
              ) -> list[dict[str, Any]]:
    """Train ``model`` in place; one log entry per epoch (loss, learning rate, metric).

    ``stop_when(entry)`` ends the fine-tune early after an epoch (CAC's retraining stops as
    soon as the accuracy is back within budget)."""
    check_options(options, group)
    emit = events or (lambda _kind, _info: None)
    params = [p for p in model.parameters() if p.requires_grad]
    if options.epochs == 0 or not params:
        return []
    task = on_device_task(task, options.device)
    with on_device(model, options.device):  # back on the CPU afterwards: the bundle is written from there
        if callable(getattr(task, "train_epoch", None)):
            return _own_epochs(model, task, options, emit, stop_when)
        return _own_loop(model, task, options, group, emit, stop_when)


def _own_loop(model: nn.Module, task: Task, options: FineTuneOptions, group: Dist, emit: Events,
              stop_when: Callable[[dict[str, Any]], bool] | None) -> list[dict[str, Any]]:
    """prunectl's loop: the task's batches (CPU tensors, fed to the model where it is), its loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    fed = fed_on(model, options.device)
    per_epoch = len(training_batches(task, 0, options.seed))
    optimizer, scheduler = make_optimizer(task, params, per_epoch * options.epochs, options.lr)
    log: list[dict[str, Any]] = []
    for epoch in range(options.epochs):
        batches = training_batches(task, epoch, options.seed)
        emit("epoch_start", {"epoch": epoch + 1, "epochs": options.epochs, "batches": len(batches)})
        model.train()
        lr = float(optimizer.param_groups[0]["lr"])
        loss_sum, seen = 0.0, 0
        for index, (inputs, targets) in enumerate(batches):
            loss_sum += accumulate_gradients(fed, _task_loss(task), params, inputs, targets, options.micro_batches,
                                             group, mix_seed(options.seed, epoch, index))
            seen += len(targets)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            emit("batch", {"epoch": epoch + 1, "batch": index + 1})
        entry = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / max(seen, 1),
                 "accuracy": float(task.metric(model))}
        log.append(entry)
        emit("epoch", entry)
        if stop_when is not None and stop_when(entry):
            break
    model.eval()
    return log


def _own_epochs(model: nn.Module, task: Task, options: FineTuneOptions, emit: Events,
                stop_when: Callable[[dict[str, Any]], bool] | None) -> list[dict[str, Any]]:
    """Epochs of a task's own ``train_epoch(model, epoch, seed)`` (the in-process caller's ``train``):
    its optimizer, learning rate and batches are its own, so the log has the metric only."""
    if options.lr is not None:
        raise SpecError("lr: the given train() chooses its own learning rate; leave lr unset")
    log: list[dict[str, Any]] = []
    for epoch in range(options.epochs):
        emit("epoch_start", {"epoch": epoch + 1, "epochs": options.epochs, "batches": 1})
        torch.manual_seed(mix_seed(options.seed, epoch))
        model.train()
        task.train_epoch(model, epoch, options.seed)
        entry = {"epoch": epoch + 1, "accuracy": float(task.metric(model))}
        log.append(entry)
        emit("epoch", entry)
        if stop_when is not None and stop_when(entry):
            break
    model.eval()
    return log


PartLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _task_loss(task: Task) -> PartLoss:
    return lambda model, x, y: task.loss(model(x), y)


def accumulate_gradients(model: nn.Module, loss_of: PartLoss, params: list[nn.Parameter], inputs: torch.Tensor,
                         targets: torch.Tensor, parts: int, group: Dist, seed: int) -> float:
    """Set every ``param.grad`` to the batch gradient, summed part by part; the batch's summed loss.

    ``loss_of(model, x, y)`` is a part's mean loss; each part weighs by its share of the batch's rows
    (samples, or token windows of one length), so the parts add up to the whole batch's mean."""
    size = len(targets)
    chunks = list(zip(torch.tensor_split(inputs, parts), torch.tensor_split(targets, parts)))
    width = sum(p.numel() for p in params) + 1  # the last column carries the part's summed loss
    buffers = list(model.buffers())
    first_buffers = None
    rows = []
    for part in range(group.rank, parts, group.world):
        x, y = chunks[part]
        if len(y) == 0:
            rows.append(torch.zeros(width, dtype=torch.float64))
            continue
        for p in params:
            p.grad = None
        torch.manual_seed(mix_seed(seed, part))
        loss = loss_of(model, x, y)
        (loss * (len(y) / size)).backward()
        # gathered and summed on the CPU in float64 whatever the device (the order fixed as above)
        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).double().cpu() for p in params]
        rows.append(torch.cat(grads + [loss.detach().double().cpu().reshape(1) * len(y)]))
        if part == 0 and parts > 1:
            first_buffers = [b.detach().clone() for b in buffers]
    mine = torch.stack(rows)
    gathered = group.gather_tensor(mine)
    total = torch.zeros(width, dtype=torch.float64)
    for part in range(parts):
        total = total + gathered[part % group.world][part // group.world]
    if first_buffers is not None:  # running statistics follow part 0 (rank 0 owns it)
        with torch.no_grad():
            for buffer, saved in zip(buffers, first_buffers):
                buffer.copy_(saved)
    if parts > 1:
        group.broadcast_tensors(buffers, src=0)
    offset = 0
    for p in params:
        p.grad = total[offset:offset + p.numel()].view_as(p).to(p.device, p.dtype)
        offset += p.numel()
    return float(total[-1])
