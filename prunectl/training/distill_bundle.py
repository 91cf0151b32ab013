"""``prunectl finetune BUNDLE --distill --data text.txt --steps N``: distil the original into the bundle.

The teacher is ``--teacher PATH``, else the checkpoint the manifest's ``source`` names (a file
name: looked for beside the bundle, then in the working directory), accepted only if its sha256
is the one recorded. Teacher and student must embed the same vocabulary. The data is the bundle's
calibration text (or token ids), cut as ``prune`` cuts it; with ``task_loss_weight`` the
next-token loss is added to the KL. AdamW without weight decay at a constant ``lr`` after a linear
warm-up over the first 10 % of the steps. Resumable (distill_state.py) and data-parallel under
torchrun (distill.py); only rank 0 writes. The new bundle keeps the recipe and is proven like any
fine-tune (finetune_bundle.rebuilt_with); report.json gains ``distill``: teacher, data, steps,
KL before and after over the calibration windows, the step log, and with ``eval_data`` the
perplexity before and after.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..bundle.staging import check_output_path
from ..bundle.writer import versions, write_bundle
from ..errors import CheckpointError, VerificationError
from ..formats import history as H
from ..formats.checksums import file_sha256
from ..formats.manifest import MANIFEST_NAME, Manifest
from ..formats.strict_json import read_json
from ..loading.bundle import load_bundle
from ..loading.checkpoint import Loaded, companions_of, load_checkpoint
from ..loading.text_data import causal_lm_loss, is_text, load_calibration, vocabulary_size
from ..loading.tokenizer import find_tokenizer
from ..measure.perplexity import before_and_after, eval_tokens, evaluate_perplexity
from ..models.device import device_name, is_cpu, on_device, resolve_device
from ..models.inputs import make_inputs
from ..options import (
    DEFAULT_CALIB_SEQ_LEN,
    DEFAULT_CALIB_TOKENS,
    DEFAULT_DISTILL_CHECKPOINT_EVERY,
    DEFAULT_DISTILL_LR,
)
from .distill import DistillOptions, Events, PassBatches, Training, mean_kl, shuffled_each_pass
from .distill_state import Checkpoints, resumable_distill
from .distributed import from_environment
from .finetune_bundle import rebuilt_with

WARMUP_FRACTION = 0.1


def distill_bundle(bundle: str | Path, data: str | Path, steps: int, teacher: str | Path | None = None,
                   tokenizer: str | Path | None = None, output: str | Path | None = None, seed: int = 0,
                   lr: float = DEFAULT_DISTILL_LR, temperature: float = 1.0, task_loss_weight: float = 0.0,
                   calib_seq_len: int = DEFAULT_CALIB_SEQ_LEN, calib_tokens: int = DEFAULT_CALIB_TOKENS,
                   eval_data: str | Path | None = None, micro_batches: int | None = None,
                   checkpoint_every: int = DEFAULT_DISTILL_CHECKPOINT_EVERY, events: Events | None = None,
                   device: str | torch.device | None = None) -> dict[str, Any]:
    where = resolve_device(device)  # a device that is not here: exit 3 before anything is read
    bundle = Path(bundle)
    out = Path(output) if output is not None else bundle
    group = from_environment()
    options = DistillOptions(steps, lr, temperature, seed, task_loss_weight, micro_batches or group.world)
    options.check(group)
    model, manifest = load_bundle(bundle)
    if group.is_writer:
        check_output_path(out)
    original = find_teacher(bundle, manifest, teacher)
    _same_vocabulary(model, original)
    tokens = find_tokenizer(tokenizer, bundle) if is_text(data) or eval_data is not None else None
    if tokens is None and (is_text(data) or eval_data is not None):
        tokens = find_tokenizer(None, original.path)  # the teacher's folder holds the same tokenizer
    calibration = load_calibration(data, model, tokens, calib_seq_len, calib_tokens, seed)
    windows = [ids for ids, _ in calibration.batches]
    eval_ids = None if eval_data is None else eval_tokens(Path(eval_data), tokens, model)
    fingerprint = {**run_fingerprint(bundle, original, options, where), "--data (sha256)": file_sha256(data),
                   "--tokenizer": None if tokens is None else tokens.source, "--calib-seq-len": calib_seq_len,
                   "--calib-tokens": calib_tokens,
                   "--eval-data (sha256)": None if eval_data is None else file_sha256(eval_data)}
    checkpoints = Checkpoints(out, fingerprint, checkpoint_every, steps, group)
    saved = checkpoints.saved()  # a state from other arguments: exit 3 before any work
    before = None if eval_ids is None or not group.is_writer else evaluate_perplexity(model, eval_ids,
                                                                                     source=str(eval_data))
    # student and teacher on the device for the three passes, back on the CPU for the rebuild and the bundle
    with on_device(model, where), on_device(original.model, where):
        kl_before = mean_kl(model, original.model, windows, temperature) if group.is_writer else None
        log = resumable_distill(model, original.model, PassBatches(shuffled_each_pass(calibration.batches, seed),
                                                                   str(data)),
                                lambda params: _adamw_with_warmup(params, lr, steps), options, checkpoints, saved,
                                causal_lm_loss, events)
        kl_after = mean_kl(model, original.model, windows, temperature) if group.is_writer else None

    result = {"output": str(out), "steps": steps, "kl_before": kl_before, "kl_after": kl_after}
    if group.is_writer:
        inputs = make_inputs(manifest.input_spec, manifest.seed, model=model)
        rebuilt, worst = rebuilt_with(bundle, manifest, model, inputs)
        section = {"teacher": original.path.name, "data": calibration.details or str(data), "steps": steps,
                   "lr": lr, "temperature": temperature, "seed": seed, "kl_before": kl_before, "kl_after": kl_after,
                   "log": log, "rebuilt_max_abs": worst,
                   **({"task_loss_weight": task_loss_weight} if task_loss_weight else {}),
                   **({"device": device_name(where)} if not is_cpu(where) else {}),
                   **({"perplexity": before_and_after(before, evaluate_perplexity(
                       rebuilt, eval_ids, source=str(eval_data)))} if eval_ids is not None else {})}
        history = H.read_history(bundle / H.HISTORY_NAME) if (bundle / H.HISTORY_NAME).is_file() else None
        write_distilled(bundle, out, manifest, rebuilt, inputs, section,
                        None if history is None else {H.HISTORY_NAME: H.history_bytes(history)})
        checkpoints.finish()
        if eval_ids is not None:
            result["perplexity"] = section["perplexity"]
    group.barrier()
    return result


def run_fingerprint(bundle: Path, teacher: Loaded, options: DistillOptions, where: torch.device) -> dict[str, Any]:
    """What a resumed distillation must share with the run that saved the state, named as the user gives it."""
    return {"BUNDLE (sha256 of its manifest)": file_sha256(bundle / MANIFEST_NAME),
            "teacher (sha256)": teacher.sha256, "--steps": options.steps, "--lr": options.lr,
            "--temperature": options.temperature, "--task-loss-weight": options.task_loss_weight,
            "--seed": options.seed, "--micro-batches": options.micro_batches,
            **({"--device": device_name(where)} if not is_cpu(where) else {})}


def _adamw_with_warmup(params: list[nn.Parameter], lr: float, steps: int) -> Training:
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, int(steps * WARMUP_FRACTION))
    return Training(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup)))


def write_distilled(bundle: Path, out: Path, manifest: Manifest, rebuilt: nn.Module, inputs: list[torch.Tensor],
                    section: dict[str, Any], extra_files: dict[str, bytes] | None) -> None:
    """The new bundle: the source's recipe and manifest facts, the new weights, report.json's ``distill``."""
    report = read_json(bundle / "report.json", VerificationError)
    report["distill"] = section
    manifest = Manifest(manifest.rebuild, manifest.resize, manifest.kept, manifest.input, {}, versions(),
                        dict(manifest.extra))
    write_bundle(out, rebuilt, manifest, report, inputs, manifest.extra["onnx"]["opset"]
                 if "onnx" in manifest.extra else None, extra_files=extra_files, hf_companions=companions_of(bundle))


def find_teacher(bundle: Path, manifest: Manifest, given: str | Path | None) -> Loaded:
    """``--teacher``, else the manifest's source found beside the bundle or here, if its sha256 matches."""
    if given is not None:
        return load_checkpoint(given)
    source = manifest.extra.get("source") or {}
    name = source.get("path")
    candidates = [where / name for where in (bundle.parent, Path.cwd())] if name else []
    found = next((path for path in candidates if path.exists()), None)
    if found is None:
        raise CheckpointError(f"{bundle / MANIFEST_NAME}: the original checkpoint {name!r} is not beside the bundle "
                              "nor in the working directory: pass --teacher PATH")
    loaded = load_checkpoint(found)
    if source.get("sha256") and loaded.sha256 != source["sha256"]:
        raise CheckpointError(f"{found}: not the checkpoint this bundle was pruned from (its sha256 differs from "
                              f"the manifest's source): pass --teacher PATH")
    return loaded


def _same_vocabulary(student: nn.Module, teacher: Loaded) -> None:
    ours, theirs = vocabulary_size(student), vocabulary_size(teacher.model)
    if ours is None or ours != theirs:
        raise CheckpointError(f"--teacher {teacher.path}: embeds {theirs} token ids, the bundle's model {ours}: "
                              "distillation compares their next-token distributions, which needs the same vocabulary")
