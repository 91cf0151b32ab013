"""Commands on a bundle or checkpoint that prune nothing: ``verify``, ``export``, ``info``,
``eval`` (perplexity), ``report``, and ``criteria`` (what is installed)."""
from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

from ..options import DEFAULT_EVAL_SEQ_LEN
from ..views import terminal
from .app import cli
from .handling import handle_errors
from .options import (
    device_option,
    input_shape_option,
    model_option,
    opset_option,
    output_options,
    tokenizer_option,
    trust_pickle_option,
)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=str))
@output_options
@handle_errors
def verify(bundle: str, quiet: bool, as_json: bool) -> None:
    """Re-check BUNDLE: checksums, strict rebuild without pickle, forward pass, ONNX vs torch.

    Example: prunectl verify out/
    """
    from .. import api  # torch is imported when a command runs, not for --help

    result = api.verify(bundle)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        terminal.verify_summary(Console(), result)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--onnx", is_flag=True, help="Export model.onnx (checked with onnxruntime).")
@opset_option
@output_options
@handle_errors
def export(bundle: str, onnx: bool, opset: int, quiet: bool, as_json: bool) -> None:
    """Add an export to BUNDLE, atomically, and record it in the manifest.

    Example: prunectl export out/ --onnx --opset 17
    """
    from .. import api  # torch is imported when a command runs, not for --help

    if not onnx:
        raise click.UsageError("nothing to export: pass --onnx")
    manifest = api.export(bundle, onnx=onnx, opset=opset).to_json()
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    elif not quiet:
        Console().print(f"[green]ok[/green] {bundle}/model.onnx (opset {manifest['onnx']['opset']}, "
                        f"max |onnx - torch| {manifest['onnx']['max_abs']:.3g})")


@cli.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--spec", type=click.Path(dir_okay=False, path_type=str), help="Spec listing the layers to show.")
@model_option
@input_shape_option
@trust_pickle_option
@output_options
@handle_errors
def info(path: str, quiet: bool, as_json: bool, **options: Any) -> None:
    """Show per-layer widths, params and MACs of a checkpoint or bundle.

    Example: prunectl info out/   or   prunectl info ckpt.pt --spec spec.json
    """
    from .. import api  # torch is imported when a command runs, not for --help

    result = api.info(path, **options)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        terminal.info_table(Console(), result)


@cli.command("eval")
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.option("--data", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Plain UTF-8 text (.txt), tokenised with the model's own tokenizer.")
@tokenizer_option
@click.option("--seq-len", type=int, default=DEFAULT_EVAL_SEQ_LEN, show_default=True, help="Tokens per window.")
@click.option("--stride", type=int, help="Tokens between window starts (default: --seq-len, no overlap).")
@click.option("--max-tokens", type=int, help="Evaluate only the first N tokens of the text.")
@device_option
@model_option
@trust_pickle_option
@output_options
@handle_errors
def eval_command(checkpoint: str, quiet: bool, as_json: bool, **options: Any) -> None:
    """Perplexity of CHECKPOINT's (a Hugging Face folder, bundle or checkpoint) language model on text.

    Example: prunectl eval out/ --data wiki.test.txt --seq-len 256
    """
    from .. import api  # torch is imported when a command runs, not for --help

    result = api.evaluate(checkpoint, **options)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        terminal.perplexity_line(Console(), result)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON on stdout.")
@handle_errors
def criteria(as_json: bool) -> None:
    """List the channel-importance criteria installed (built-in and plugins).

    Example: prunectl criteria --json
    """
    from .. import api  # torch is imported when a command runs, not for --help

    rows = api.criteria()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        terminal.criteria_table(Console(), rows)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="HTML file to write (default: BUNDLE/report.html); its PNGs go beside it.")
@output_options
@handle_errors
def report(bundle: str, output: str | None, quiet: bool, as_json: bool) -> None:
    """Write a self-contained HTML report of BUNDLE: widths chart, totals, checks, files.

    Example: prunectl report out/ -o out-report.html
    """
    from ..views.html_report import write_report  # matplotlib is imported only when a report is asked for

    written = write_report(bundle, output)
    if as_json:
        click.echo(json.dumps({"html": str(written.html), "images": [str(p) for p in written.images]}, indent=2))
    elif not quiet:
        Console().print(f"[green]ok[/green] {written.html} (+ {', '.join(p.name for p in written.images)})")
