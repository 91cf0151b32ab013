"""The final bundle of an ``auto`` run, written by ``bundle.writer.write_bundle`` (the code path of ``prune``).

The recipe is proven (``prove_recipe``: rebuilt from args + resize, loaded strictly, compared
with the searched model); ``kept`` is in the original numbering (composed through an input
bundle's own ``kept`` for iterative pruning); report.json gains an ``auto`` section (mode,
algorithm, accuracies, every trial with its per-epoch log); history.json/png go beside.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bundle.manifest_builder import build_manifest
from ..bundle.report import build_report
from ..bundle.writer import write_bundle
from ..cut.plan import kept_by_layer, make_plan
from ..formats.manifest import Manifest
from ..loading.checkpoint import Loaded
from ..models.device import device_name, is_cpu
from ..options import DEFAULT_CALC_ITER, DEFAULT_OPSET, DEFAULT_ROUND_MODE, DEFAULT_SCALING_FACTOR
from ..verification.precision import PROOF_TOLERANCE
from ..verification.recipe import prove_recipe
from ..views.history_files import history_files


def write_auto_bundle(run: Any, loaded: Loaded, checkpoint: str | Path, output: Path, spec_sha: str | None
                      ) -> tuple[Manifest, dict]:
    """Write ``output`` from a finished search ``run`` (run.SearchRun); (manifest, report)."""
    ctx, state = run.ctx, run.state
    recipe = prove_recipe(ctx.spec, loaded.model_ref, run.model, ctx.inputs[0])
    report = build_report(run.original, recipe.model, ctx.inputs[0], list(ctx.spec.layer_names), ctx.original_groups,
                          run.total)
    final_accuracy = state["history"][-1]["accuracy"]
    report["auto"] = {
        "mode": "target" if run.kind else "accuracy",
        "algorithm": "NetAdapt (Yang et al., ECCV 2018)" if run.kind else "CAC automatic pruning (Fujitsu)",
        "task": run.options.task or "in-process", "max_drop": run.options.max_drop,
        **({"target": {"kind": run.kind, "fraction": run.target}} if run.kind else {}),
        "original_accuracy": state["original_accuracy"], "final_accuracy": final_accuracy,
        "drop": round(state["original_accuracy"] - final_accuracy, 6),
        "within_max_drop": state["original_accuracy"] - final_accuracy <= run.options.max_drop + 1e-9,
        "iterations": state["step"],
        "accepted_steps": sum(1 for h in state["history"][1:] if h["phase"] != "final-finetune"),
        "stopped_because": state["stopped_because"], "epochs": run.options.epochs,
        "final_epochs": run.options.final_epochs, "micro_batches": run.micro, "seed": run.options.seed,
        # only when given: default runs keep the report bytes they had before the option
        **({"exclude": list(ctx.exclude)} if ctx.exclude else {}), **_knobs(run.options),
        "trials": state["trials"], **({"final_log": state["final_log"]} if "final_log" in state else {})}
    facts = {"criterion": ctx.criterion.name, "round_to": ctx.select.round_to,
             # only when not the default: default runs keep the bytes they had before the option
             **({} if ctx.select.round_mode == DEFAULT_ROUND_MODE else {"round_mode": ctx.select.round_mode}),
             "min_channels": ctx.select.min_channels,
             "group_reduce": ctx.select.group_reduce,
             "verify": {"soft_vs_hard_max_abs": state["worst_soft_vs_hard"], "tolerance": PROOF_TOLERANCE,
                        "precision": "float64", "inputs": len(ctx.inputs), "seed": run.options.seed},
             # only off the CPU (CPU runs keep their bytes): where scores, training and the proofs ran
             **({"device": device_name(ctx.device)} if not is_cpu(ctx.device) else {})}
    manifest = build_manifest(model_ref=loaded.model_ref, args=recipe.args, resize=recipe.resize,
                              kept=kept_by_layer(make_plan(ctx.original_groups, run.total)),
                              input_spec=run.input_spec,
                              facts=facts, checkpoint=checkpoint, checkpoint_sha256=loaded.sha256,
                              spec_sha256=spec_sha, previous=loaded.manifest)
    files = history_files(state["history"], size_key=run.kind or "params")
    manifest = write_bundle(output, recipe.model, manifest, report, ctx.inputs,
                            DEFAULT_OPSET if run.options.onnx else None, extra_files=files)
    return manifest, report


def _knobs(options: Any) -> dict[str, Any]:
    """CAC's trust-region knobs and the learning rate, where they are not the defaults."""
    defaults = {"trust_radius": None, "scaling_factor": DEFAULT_SCALING_FACTOR, "calc_iter": DEFAULT_CALC_ITER,
                "lr": None}
    return {name: getattr(options, name) for name, default in defaults.items() if getattr(options, name) != default}
