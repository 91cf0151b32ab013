"""The final bundle of an ``auto`` run, written by ``bundle_files.write_bundle`` (the code path of ``prune``).

The recipe is proven (``prove_recipe``: rebuilt from args + resize, loaded strictly, compared
with the searched model); ``kept`` is in the original numbering (composed through an input
bundle's own ``kept`` for iterative pruning); report.json gains an ``auto`` section (mode,
algorithm, accuracies, every trial with its per-epoch log); history.json/png go beside.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import api
from ..bundle_files import versions, write_bundle
from ..manifest import Manifest
from ..plan import compose as compose_indices, kept_by_layer, make_plan
from ..rebuild import prove_recipe
from ..report import build_report
from . import history as H


def write_auto_bundle(run: Any, loaded: Any, checkpoint: str | Path, output: Path, spec_sha: str | None
                      ) -> tuple[Manifest, dict]:
    """Write ``output`` from a finished search ``run`` (search._Run); (manifest, report)."""
    ctx, state = run.ctx, run.state
    recipe = prove_recipe(ctx.spec, loaded.model_ref, run.model, ctx.inputs[0], ctx.tolerance)
    args, resize, rebuilt = recipe.args, recipe.resize, recipe.model
    report = build_report(run.original, rebuilt, ctx.inputs[0], list(ctx.spec.layer_names), ctx.original_groups,
                          run.total)
    final_accuracy = state["history"][-1]["accuracy"]
    report["auto"] = {
        "mode": "target" if run.kind else "accuracy",
        "algorithm": "NetAdapt (Yang et al., ECCV 2018)" if run.kind else "CAC automatic pruning (Fujitsu)",
        "task": run.options.task, "max_drop": run.options.max_drop,
        **({"target": {"kind": run.kind, "fraction": run.target}} if run.kind else {}),
        "original_accuracy": state["original_accuracy"], "final_accuracy": final_accuracy,
        "drop": round(state["original_accuracy"] - final_accuracy, 6),
        "within_max_drop": state["original_accuracy"] - final_accuracy <= run.options.max_drop + 1e-9,
        "iterations": state["step"], "accepted_steps": sum(1 for h in state["history"][1:] if h["phase"] != "final-finetune"),
        "stopped_because": state["stopped_because"], "epochs": run.options.epochs,
        "final_epochs": run.options.final_epochs, "micro_batches": run.micro, "seed": run.options.seed,
        "trials": state["trials"], **({"final_log": state["final_log"]} if "final_log" in state else {})}
    kept = kept_by_layer(make_plan(ctx.original_groups, run.total))
    if loaded.manifest is not None:
        kept = compose_indices(loaded.manifest.kept, kept)
    manifest = Manifest(
        rebuild={"factory": loaded.model_ref.factory, "args": args}, resize=resize, kept=kept,
        input=run.input_json,
        files={}, versions=versions(),
        extra={"criterion": ctx.criterion.name, "round_to": ctx.select.round_to, "min_channels": ctx.select.min_channels,
               "group_reduce": ctx.select.group_reduce,
               "verify": {"soft_vs_hard_max_abs": state["worst_soft_vs_hard"], "tolerance": ctx.tolerance,
                          "inputs": len(ctx.inputs), "seed": run.options.seed},
               "source": {"path": Path(checkpoint).name, "sha256": loaded.sha256},
               **({"spec_sha256": spec_sha} if spec_sha else {})})
    files = H.history_files(state["history"], size_key=run.kind or "params")
    manifest = write_bundle(output, rebuilt, manifest, report, ctx.inputs,
                            api.DEFAULT_OPSET if run.options.onnx else None, extra_files=files)
    return manifest, report
