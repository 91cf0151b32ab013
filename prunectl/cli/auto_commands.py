"""``prunectl auto``: CAC or NetAdapt, retraining as it goes."""
from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

from .. import options as O
from .app import cli
from .handling import handle_errors
from .options import (
    device_option,
    exclude_option,
    lr_option,
    micro_batches_option,
    model_option,
    onnx_option,
    output_options,
    selection_options,
    spec_option,
    task_option,
)
from .run_config import config_option


@cli.command("auto")
@click.argument("checkpoint", type=click.Path(dir_okay=True, path_type=str))
@spec_option
@config_option
@model_option
@task_option
@click.option("--max-drop", type=float, default=O.DEFAULT_MAX_DROP, show_default=True,
              help="Accuracy points the validation metric may lose against the original.")
@click.option("--target-macs", type=float, help="Target mode (NetAdapt): keep this fraction of the MACs.")
@click.option("--target-params", type=float, help="Target mode (NetAdapt): keep this fraction of the parameters.")
@selection_options
@exclude_option
@click.option("--epochs", type=int, default=O.DEFAULT_AUTO_EPOCHS, show_default=True,
              help="Retraining epochs per step (at most).")
@click.option("--final-epochs", type=int, default=O.AutoOptions.final_epochs, show_default=True,
              help="A long fine-tune at the end.")
@click.option("--early-stop/--full-retrain", default=True, show_default=True,
              help="Stop each retrain once back within --max-drop (CAC), or run every epoch and keep the best.")
@click.option("--budget-minutes", type=float, help="Stop searching after this much wall time.")
@click.option("--max-steps", type=int, default=O.DEFAULT_MAX_STEPS, show_default=True,
              help="Stop after this many search steps.")
@click.option("--rates", default=",".join(str(r) for r in O.DEFAULT_CAC_RATES), show_default=True,
              help="CAC: candidate rates per layer and step.")
@click.option("--loss-margin", type=float, default=O.DEFAULT_LOSS_MARGIN, show_default=True,
              help="CAC: loss margin of the thresholds.")
@click.option("--trust-radius", type=float,
              help="CAC: initial bound on the thresholds' L2 norm (default: computed from the model, as CAC's "
              "initialize_upper_bound).")
@click.option("--scaling-factor", type=float, default=O.DEFAULT_SCALING_FACTOR, show_default=True,
              help="CAC: the bound grows by at least this after an accepted step, shrinks by its inverse after a "
              "rejected one.")
@click.option("--calc-iter", type=int, default=O.DEFAULT_CALC_ITER, show_default=True,
              help="CAC: validation batches each sensitivity is averaged over.")
@lr_option
@click.option("--step-fraction", type=float, help="NetAdapt: resource saved per step, as a fraction of the original.")
@click.option("-o", "--output", type=click.Path(path_type=str), help="Bundle directory (default: NAME-auto).")
@onnx_option
@click.option("--resume", is_flag=True, help="Continue from OUTPUT.auto-state after an interruption.")
@click.option("--seed", type=int, default=O.DEFAULT_SEED, show_default=True,
              help="Seed of every step (same seed, same bundle).")
@device_option
@micro_batches_option
@click.option("--threads", type=int, default=O.AutoOptions.threads, show_default=True,
              help="Torch threads (1: bit-identical reruns).")
@output_options
@handle_errors
def auto_command(checkpoint: str, quiet: bool, as_json: bool, rates: str, **options: Any) -> None:
    """Find per-layer widths automatically: within --max-drop of the original accuracy (CAC), or
    toward --target-macs/--target-params (NetAdapt), retraining as it goes. Resumable.

    Example: prunectl auto mlp.pt --spec mlp.json --task digits --max-drop 0.5 -o out/
    """
    from ..auto.search import auto
    from ..views.auto_progress import AutoProgress, auto_summary

    try:
        parsed_rates = tuple(float(r) for r in rates.split(",") if r.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {rates!r}", param_hint="--rates") from None
    with AutoProgress(quiet or as_json) as progress:
        result = auto(checkpoint, O.AutoOptions(rates=parsed_rates, **options), events=progress)
    if as_json:
        click.echo(json.dumps({"output": str(result.output) if result.output else None, "history": result.history,
                               "stopped_because": result.stopped_because, "wall_seconds": result.wall_seconds},
                              indent=2))
    elif not quiet and result.output is not None:
        auto_summary(Console(), result)
