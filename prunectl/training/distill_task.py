"""``prunectl finetune BUNDLE --distill --task T``: a pruned CNN/ViT distilled from its original on a task's data.

The teacher is found as for language models (``distill_bundle.find_teacher``: ``--teacher``, else
the manifest's source beside the bundle or in the working directory, its sha256 checked); it must
give as many outputs per example as the bundle's model. The data is the task's training batches
(its ``training_batches(epoch, seed)``, else its calibration batches reshuffled: the fine-tune's
``training_batches``), one pass per epoch; ``steps`` defaults to ``epochs`` passes (the task's
``fine_tune_epochs``, else 5). Loss: KL to the teacher's logits at ``temperature`` plus
``task_loss_weight`` times the task's loss on the labels (Hinton et al. 2015). Optimizer: the
task's, else SGD (momentum 0.9, lr 0.01, a cosine decay over the steps), as ``finetune --task``.
Resumable and data-parallel as the text path (distill_state.py, distill.py); only rank 0 writes.
report.json gains ``distill`` (task, teacher, steps, KL on the validation batches and accuracy
before and after, the step log), history.json a ``distill`` step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..bundle.staging import check_output_path
from ..errors import CheckpointError, SpecError
from ..formats import history as H
from ..loading.bundle import load_bundle
from ..measure.size import count_macs, count_params
from ..models.device import device_name, is_cpu, on_device, resolve_device
from ..models.inputs import make_inputs
from ..options import DEFAULT_DISTILL_CHECKPOINT_EVERY, DEFAULT_FINETUNE_EPOCHS
from ..tasks import get_task
from ..views.history_files import history_files
from .device_task import on_device_task
from .distill import DistillOptions, Events, PassBatches, Training, logits_of, mean_kl
from .distill_bundle import find_teacher, run_fingerprint, write_distilled
from .distill_state import Checkpoints, resumable_distill
from .distributed import from_environment
from .finetune import make_optimizer, training_batches
from .finetune_bundle import rebuilt_with


def distill_task_bundle(bundle: str | Path, task_name: str, steps: int | None = None, epochs: int | None = None,
                        teacher: str | Path | None = None, output: str | Path | None = None, seed: int = 0,
                        lr: float | None = None, temperature: float = 1.0, task_loss_weight: float = 0.0,
                        micro_batches: int | None = None, checkpoint_every: int = DEFAULT_DISTILL_CHECKPOINT_EVERY,
                        events: Events | None = None, device: str | torch.device | None = None) -> dict[str, Any]:
    where = resolve_device(device)  # a device that is not here: exit 3 before anything is read
    bundle = Path(bundle)
    out = Path(output) if output is not None else bundle
    if steps is not None and epochs is not None:
        raise SpecError(f"--steps {steps} and --epochs {epochs}: give one of them")
    group = from_environment()
    model, manifest = load_bundle(bundle)
    if group.is_writer:
        check_output_path(out)
    task = on_device_task(get_task(task_name), where)
    batches = PassBatches(lambda epoch: training_batches(task, epoch, seed), f"task {task_name!r}")
    if steps is None:
        epochs = epochs if epochs is not None else int(getattr(task, "fine_tune_epochs", DEFAULT_FINETUNE_EPOCHS))
        steps = epochs * batches.per_pass
    options = DistillOptions(steps, lr, temperature, seed, task_loss_weight, micro_batches or group.world)
    options.check(group)
    original = find_teacher(bundle, manifest, teacher)
    _same_outputs(model, original.model, original.path, batches.at(0)[0][:1])
    fingerprint = {**run_fingerprint(bundle, original, options, where), "--task": task_name}
    checkpoints = Checkpoints(out, fingerprint, checkpoint_every, steps, group)
    saved = checkpoints.saved()  # a state from other arguments: exit 3 before any work

    validation = [x for x, _ in task.validation_batches()]
    accuracy_before = float(task.metric(model)) if group.is_writer else None  # rank 0 reports
    with on_device(model, where), on_device(original.model, where):
        kl_before = mean_kl(model, original.model, validation, temperature) if group.is_writer else None
        log = resumable_distill(model, original.model, batches,
                                lambda params: Training(*make_optimizer(task, params, steps, lr)), options,
                                checkpoints, saved, lambda logits, y: task.loss(logits, y), events)
        kl_after = mean_kl(model, original.model, validation, temperature) if group.is_writer else None

    result: dict[str, Any] = {"output": str(out), "steps": steps, "kl_before": kl_before, "kl_after": kl_after}
    if group.is_writer:
        accuracy_after = float(task.metric(model))
        inputs = make_inputs(manifest.input_spec, manifest.seed, model=model)
        rebuilt, worst = rebuilt_with(bundle, manifest, model, inputs)
        section = {"task": task_name, "teacher": original.path.name, "steps": steps, "lr": lr,
                   "temperature": temperature, "task_loss_weight": task_loss_weight, "seed": seed,
                   "kl_before": kl_before, "kl_after": kl_after, "accuracy_before": accuracy_before,
                   "accuracy_after": accuracy_after, "log": log, "rebuilt_max_abs": worst,
                   **({"device": device_name(where)} if not is_cpu(where) else {})}
        history = H.read_history(bundle / H.HISTORY_NAME) if (bundle / H.HISTORY_NAME).is_file() else []
        sizes = {"params": count_params(rebuilt), "macs": count_macs(rebuilt, inputs[0])}
        if not history:
            history.append(H.entry(0, sizes, accuracy_before, {}, "original", note="bundle before distillation"))
        history.append(H.entry(len(history), sizes, accuracy_after, {}, "distill",
                               note=f"{steps} steps toward {original.path.name}'s logits"))
        write_distilled(bundle, out, manifest, rebuilt, inputs, section, history_files(history))
        checkpoints.finish()
        result.update(accuracy_before=accuracy_before, accuracy_after=accuracy_after)
    group.barrier()
    return result


@torch.no_grad()
def _same_outputs(student: torch.nn.Module, teacher: torch.nn.Module, teacher_path: Path, x: torch.Tensor) -> None:
    """The KL compares the two output distributions: the same number of classes, or exit 5 before training."""
    student.eval()
    teacher.eval()
    ours, theirs = logits_of(student, x).shape[1:], logits_of(teacher, x).shape[1:]
    if ours != theirs:
        raise CheckpointError(f"--teacher {teacher_path}: gives {tuple(theirs)} outputs per example, the bundle's "
                              f"model {tuple(ours)}: distillation compares their output distributions, which "
                              "needs the same classes")
