"""``prunectl finetune BUNDLE``: fine-tune a bundle's model and write a new verified bundle.

The new bundle keeps the manifest's recipe (``rebuild``, ``resize``, ``kept``) and gets new
weights. Verification: the model rebuilt from the recipe, loaded strictly with the new
weights, must compute what the fine-tuned model computes (the recipe is proven again, as
``prune`` proves it). report.json gains a ``finetune`` section with the per-epoch log, and
history.json (kept from the source bundle, or started) gains one ``finetune`` step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..bundle.staging import check_output_path
from ..bundle.writer import versions, write_bundle
from ..errors import SpecError, VerificationError
from ..formats import history as H
from ..formats.manifest import MANIFEST_NAME, Manifest
from ..formats.strict_json import read_json
from ..loading.bundle import load_bundle, rebuild_model
from ..measure.size import count_macs, count_params
from ..models.device import device_name, is_cpu, resolve_device
from ..models.forward import run
from ..models.inputs import make_inputs
from ..options import DEFAULT_FINETUNE_EPOCHS
from ..tasks import get_task
from ..verification.compare import compare, tolerance_for
from ..views.history_files import history_files
from .device_task import on_device_task
from .distributed import from_environment
from .finetune import Events, FineTuneOptions, fine_tune


def finetune_bundle(bundle: str | Path, task_name: str, epochs: int | None = None, output: str | Path | None = None,
                    seed: int = 0, micro_batches: int | None = None, events: Events | None = None,
                    lr: float | None = None, device: str | torch.device | None = None) -> dict[str, Any]:
    """Fine-tune ``bundle``'s model on ``task_name``; write ``output`` (default: replace ``bundle``).

    ``device`` (``--device``): the model trains and is evaluated there; the rebuild check and the
    bundle are on the CPU."""
    where = resolve_device(device)  # a device that is not here: exit 3 before anything is read
    bundle = Path(bundle)
    out = Path(output) if output is not None else bundle
    group = from_environment()
    model, manifest = load_bundle(bundle)
    if group.is_writer:
        check_output_path(out)
    task = on_device_task(get_task(task_name), where)
    epochs = epochs if epochs is not None else int(getattr(task, "fine_tune_epochs", DEFAULT_FINETUNE_EPOCHS))
    inputs = make_inputs(manifest.input_spec, manifest.seed, model=model)
    before = float(task.metric(model))
    if lr is not None and not lr > 0:
        raise SpecError(f"--lr: expected a number > 0, got {lr}")
    options = FineTuneOptions(epochs=epochs, seed=seed, micro_batches=micro_batches or group.world, lr=lr,
                              device=where)
    log = fine_tune(model, task, options, group, events)
    after = float(task.metric(model))

    rebuilt, worst = rebuilt_with(bundle, manifest, model, inputs)
    report = read_json(bundle / "report.json", VerificationError)
    report["finetune"] = {"task": task_name, "epochs": epochs, "seed": seed, "accuracy_before": before,
                          "accuracy_after": after, "log": log, "rebuilt_max_abs": worst,
                          **({"device": device_name(where)} if not is_cpu(where) else {})}
    history = H.read_history(bundle / H.HISTORY_NAME) if (bundle / H.HISTORY_NAME).is_file() else []
    sizes = {"params": count_params(rebuilt), "macs": count_macs(rebuilt, inputs[0])}
    if not history:
        history.append(H.entry(0, sizes, before, {}, "original", note="bundle before fine-tuning"))
    history.append(H.entry(len(history), sizes, after, {}, "finetune", epochs=len(log)))
    if group.is_writer:
        manifest = Manifest(manifest.rebuild, manifest.resize, manifest.kept, manifest.input, {}, versions(),
                            dict(manifest.extra))
        write_bundle(out, rebuilt, manifest, report, inputs,
                     manifest.extra["onnx"]["opset"] if "onnx" in manifest.extra else None,
                     extra_files=history_files(history))
    group.barrier()
    return {"output": str(out), "epochs": epochs, "accuracy_before": before, "accuracy_after": after, "log": log}


def rebuilt_with(bundle: Path, manifest: Manifest, model: nn.Module, inputs: list[torch.Tensor]
                 ) -> tuple[nn.Module, float]:
    """The manifest's recipe rebuilt, loaded strictly with the trained weights, and proven to compute
    what the trained model computes on the bundle's inputs (the worst difference)."""
    tolerance = tolerance_for(model)  # the same architecture and weights: equal up to kernel rounding
    rebuilt = rebuild_model(manifest, str(bundle / MANIFEST_NAME))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    rebuilt.eval()
    worst = 0.0
    for x in inputs:
        result = compare(run(model, x, "trained model"), run(rebuilt, x, "rebuilt model"), tolerance,
                         "rebuilt vs trained")
        if not result.ok:
            raise VerificationError(f"{bundle}: the model rebuilt from the manifest differs from the trained "
                                    f"one (max diff {result.max_abs:.3g})")
        worst = max(worst, result.max_abs)
    return rebuilt, worst
