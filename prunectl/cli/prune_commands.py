"""``prunectl prune`` and ``prunectl spec``."""
from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

from ..options import DEFAULT_EVAL_SEQ_LEN, DTYPES, MODES, SCHEDULES, PruneOptions
from ..views import terminal
from .app import cli
from .handling import handle_errors, progress
from .options import (
    bundle_output_option,
    device_option,
    exclude_option,
    input_shape_option,
    model_option,
    module_option,
    only_option,
    onnx_option,
    opset_option,
    output_options,
    parse_amount,
    parse_shape,
    selection_options,
    skip_unsupported_option,
    spec_option,
    text_data_options,
    trust_pickle_option,
)
from .run_config import config_option


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=True, path_type=str))
@spec_option
@config_option
@model_option
@selection_options
@click.option("--rate", type=parse_amount, help="Fraction of output channels removed per layer, in [0, 1) "
              "(unstructured: an integer is a count of weights, as torch.nn.utils.prune takes it).")
@click.option("--rate-heads", type=float, help="Transformers: the rate for attention heads (whole KV groups).")
@click.option("--rate-mlp", type=float, help="Transformers: the rate for the MLP (FFN) widths.")
@click.option("--rate-hidden", type=float, help="Transformers: the rate for the hidden width (the residual stream).")
@click.option("--data", help="Data for data-driven criteria: a .pt/.npz file (inputs, targets), a task name, or "
              "a .txt file for a language model (tokenised with its own tokenizer).")
@text_data_options
@click.option("--bias-compensation", is_flag=True,
              help="FLAP: add each cut input's mean contribution over --data to the bias of the layer reading it "
              "(Llama's config gains mlp_bias/attention_bias; needs --data).")
@click.option("--eval-data", type=click.Path(dir_okay=False, path_type=str),
              help="A .txt file: perplexity before and after pruning into report.json (windows of "
              f"{DEFAULT_EVAL_SEQ_LEN} tokens, no overlap).")
@click.option("--global", "global_ranking", is_flag=True,
              help="Rank channels across all layers (normalised scores; --min-channels floors every layer).")
@exclude_option
@only_option
@click.option("--target-macs", type=float, help="Search the cut until this fraction of the MACs is kept (within 1%).")
@click.option("--target-params", type=float, help="Search the cut until this fraction of the params is kept.")
@click.option("--steps", type=int, default=PruneOptions.steps, show_default=True,
              help="Prune in N steps, re-scoring in between.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=PruneOptions.schedule, show_default=True,
              help="How the cut grows over --steps (agp: cubic, Zhu & Gupta 2017).")
@click.option("--mode", type=click.Choice(MODES), default=PruneOptions.mode, show_default=True,
              help="unstructured: zero single weights (l1/random, --global magnitude); shapes stay.")
@click.option("--prune-bias", is_flag=True, help="Unstructured: prune the layers' biases too.")
@click.option("--drop-layers", type=int, metavar="N",
              help="Remove N whole decoder layers (least block influence on the check inputs or --data), "
              "then cut widths; the config's layer count and per-layer lists follow.")
@device_option
@click.option("--dtype", type=click.Choice(DTYPES),
              help="Load, score, cut and save the weights in this dtype (the proof still runs in float64).")
@input_shape_option
@bundle_output_option
@onnx_option
@opset_option
@click.option("--seed", type=int, default=PruneOptions.seed, show_default=True, help="Seed of the verification inputs.")
@trust_pickle_option
@skip_unsupported_option
@click.option("--max-memory", help="Refuse runs estimated to need more memory than this (e.g. 8G); "
              "default: 80% of the memory available.")
@module_option
@click.option("--latency", is_flag=True,
              help="Time original vs pruned (torch eager and ONNX Runtime CPU) into report.json.")
@click.option("--latency-threads", type=int, default=PruneOptions.latency_threads, show_default=True,
              help="Threads for --latency timing.")
@output_options
@handle_errors
def prune(checkpoint: str, quiet: bool, as_json: bool, **options: Any) -> None:
    """Prune CHECKPOINT (state_dict, {state_dict, model} dict, bundle, Hugging Face folder or GGUF) and write a
    verified bundle.

    Example: prunectl prune ckpt.pt --spec spec.json --rate 0.5 -o out/ --onnx
    """
    from .. import api  # torch is imported when a command runs, not for --help

    _, on_stage, stop = progress(quiet or as_json)
    try:
        result = api.prune(checkpoint, PruneOptions(**options), progress=on_stage)
    finally:
        stop()
    manifest = result.manifest.to_json()
    if as_json:
        click.echo(json.dumps({"report": result.report, "manifest": manifest, "timings": result.timings,
                               "output": str(result.output) if result.output else None}, indent=2))
    elif not quiet:
        terminal.prune_summary(Console(), result.report, manifest, options.get("output"), result.timings)
        terminal.choice_summary(Console(), result.report)


@cli.command("spec")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=True, path_type=str))
@model_option
@click.option("--input-shape", callback=parse_shape,
              help="Input shape to trace with (default 1,3,224,224 for torchvision/timm, 1,16 token ids for hf text).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="Spec file to write (default: stdout).")
@skip_unsupported_option
@trust_pickle_option
@click.option("--module", help="Trace only this submodule (e.g. backbone of a detector); --input-shape is its input.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@handle_errors
def spec_command(checkpoint: str | None, output: str | None, quiet: bool, **options: Any) -> None:
    """Write the spec of a model by tracing it (torch.fx, or torch.export where fx fails), ready to
    edit and pass to --spec.

    Example: prunectl spec --model torchvision:resnet50 -o spec.json
    """
    from .. import api  # torch is imported when a command runs, not for --help

    traced = api.trace_spec(checkpoint, **options)
    text = json.dumps(traced.spec.to_json(), indent=2)
    if output is None:
        click.echo(text)
        return
    api.write_traced_spec(traced, output)
    if not quiet:
        terminal.traced_summary(Console(), traced, output)
