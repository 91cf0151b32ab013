"""The ``prunectl`` command: option parsing and printing only; the work is in ``api``."""
from __future__ import annotations

import functools
import json
import sys
import warnings
from typing import Any, Callable

import click
from rich.console import Console

from . import __version__, api, render
from .errors import PrunectlError
from .export.onnx import DEFAULT_OPSET
from .spec import GROUP_REDUCTIONS


def _shape(_ctx, _param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(part) for part in value.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,3,32,32, got {value!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise click.BadParameter(f"expected positive integers like 1,3,32,32, got {value!r}")
    return shape


def _one_line(message: str, limit: int = 2000) -> str:
    """Messages quote names from user files; newlines and control characters in them must not
    break the one-line error contract, and a 20,000-character layer name must not flood it."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """PrunectlError -> one line on stderr and its exit code; --debug shows the traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        debug = debug or (click.get_current_context().find_root().params.get("debug") or False)
        try:
            with warnings.catch_warnings():
                if not debug:  # torch's UserWarnings are noise to a CLI user; --debug shows them
                    warnings.simplefilter("ignore")
                return command(*args, **kwargs)
        except PrunectlError as exc:
            if debug:
                raise
            click.echo(f"error: {_one_line(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit):
            raise  # usage errors keep click's own message and exit code 2
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was written", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug of ours: still one line, with a way to see more
            if debug:
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            click.echo(f"error: internal error ({type(exc).__name__}: {first}); rerun with --debug "
                       "and report it", err=True)
            sys.exit(1)

    return click.option("--debug", is_flag=True, help="Show tracebacks.")(wrapper)


def _output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(command)
    return click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(command)


def _progress(quiet: bool) -> tuple[Console, Callable[[str], None] | None, Callable[[], None]]:
    """A stderr spinner naming the current stage; (console, on_stage, stop)."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        return console, None, lambda: None
    status = console.status("")
    status.start()
    return console, lambda stage: status.update(f"[bold]{stage}[/bold]…"), status.stop


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="prunectl")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Structured pruning for PyTorch: a checkpoint in, a smaller verified bundle out.

    Exit codes: 0 ok, 2 usage, 3 bad spec/options, 4 verification failed,
    5 bad checkpoint/bundle, 6 unsupported model or operator.
    """


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=True, path_type=str))
@click.option("--spec", type=click.Path(dir_okay=False, path_type=str),
              help="Sidecar spec JSON (or CAC model_info); traced from the model when omitted.")
@click.option("--model", "model", help="Model factory: pkg.module:Class, torchvision:NAME, timm:NAME or hf:CLASS.")
@click.option("--criterion", help="Channel importance criterion (default: l1; see the registry).")
@click.option("--rate", type=float, help="Fraction of output channels removed per layer, in [0, 1).")
@click.option("--round-to", type=int, help="Kept channel counts are multiples of this.")
@click.option("--min-channels", type=int, help="Never keep fewer channels than this in a layer.")
@click.option("--group-reduce", type=click.Choice(GROUP_REDUCTIONS),
              help="How coupled layers' scores combine; 'union' is CAC's union of kept channels.")
@click.option("--data", help="Data for data-driven criteria: a .pt/.npz file (inputs, targets) or a task name.")
@click.option("--global", "global_ranking", is_flag=True,
              help="Rank channels across all layers (normalised scores; --min-channels floors every layer).")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Never prune layers matching this glob (repeatable).")
@click.option("--target-macs", type=float, help="Search the cut until this fraction of the MACs is kept (within 1%).")
@click.option("--target-params", type=float, help="Search the cut until this fraction of the params is kept.")
@click.option("--steps", type=int, default=1, show_default=True, help="Prune in N steps, re-scoring in between.")
@click.option("--schedule", type=click.Choice(["linear", "agp"]), default="linear", show_default=True,
              help="How the cut grows over --steps (agp: cubic, Zhu & Gupta 2017).")
@click.option("--mode", type=click.Choice(["structured", "unstructured"]), default="structured", show_default=True,
              help="unstructured: zero single weights (l1/random, --global magnitude); shapes stay.")
@click.option("--input-shape", callback=_shape, help="Input shape for tracing and checks, e.g. 1,3,32,32.")
@click.option("-o", "--output", type=click.Path(path_type=str), help="Bundle directory to write.")
@click.option("--onnx", is_flag=True, help="Also export model.onnx, checked with onnxruntime.")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the verification inputs.")
@click.option("--trust-pickle", is_flag=True, help="Allow unpickling a whole nn.Module (runs code from the file).")
@click.option("--skip-unsupported", is_flag=True,
              help="Traced spec: leave channels behind ops prunectl cannot cut unpruned instead of failing.")
@click.option("--max-memory", help="Refuse runs estimated to need more memory than this (e.g. 8G); "
              "default: 80% of the memory available.")
@click.option("--module", help="Trace and verify only this submodule (e.g. backbone of a detector); "
              "--input-shape is its input.")
@click.option("--latency", is_flag=True,
              help="Time original vs pruned (torch eager and ONNX Runtime CPU) into report.json.")
@click.option("--latency-threads", type=int, default=1, show_default=True, help="Threads for --latency timing.")
@_output_options
@_handle_errors
def prune(checkpoint: str, quiet: bool, as_json: bool, **options: Any) -> None:
    """Prune CHECKPOINT (state_dict, {state_dict, model} dict, or bundle) and write a verified bundle.

    Example: prunectl prune ckpt.pt --spec spec.json --rate 0.5 -o out/ --onnx
    """
    console, on_stage, stop = _progress(quiet or as_json)
    try:
        result = api.prune(checkpoint, api.PruneOptions(**options), progress=on_stage)
    finally:
        stop()
    manifest = result.manifest.to_json()
    if as_json:
        click.echo(json.dumps({"report": result.report, "manifest": manifest, "timings": result.timings,
                               "output": str(result.output) if result.output else None}, indent=2))
    elif not quiet:
        render.prune_summary(Console(), result.report, manifest, options.get("output"), result.timings)
        render.choice_summary(Console(), result.report)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=str))
@_output_options
@_handle_errors
def verify(bundle: str, quiet: bool, as_json: bool) -> None:
    """Re-check BUNDLE: checksums, strict rebuild without pickle, forward pass, ONNX vs torch.

    Example: prunectl verify out/
    """
    result = api.verify(bundle)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        render.verify_summary(Console(), result)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--onnx", is_flag=True, help="Export model.onnx (checked with onnxruntime).")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset.")
@_output_options
@_handle_errors
def export(bundle: str, onnx: bool, opset: int, quiet: bool, as_json: bool) -> None:
    """Add an export to BUNDLE, atomically, and record it in the manifest.

    Example: prunectl export out/ --onnx --opset 17
    """
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
@click.option("--model", "model", help="Model factory for a bare state_dict.")
@click.option("--input-shape", callback=_shape, help="Input shape for MACs, e.g. 1,3,32,32.")
@click.option("--trust-pickle", is_flag=True, help="Allow unpickling a whole nn.Module.")
@_output_options
@_handle_errors
def info(path: str, quiet: bool, as_json: bool, **options: Any) -> None:
    """Show per-layer widths, params and MACs of a checkpoint or bundle.

    Example: prunectl info out/   or   prunectl info ckpt.pt --spec spec.json
    """
    result = api.info(path, **options)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        render.info_table(Console(), result)


@cli.command("spec")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=True, path_type=str))
@click.option("--model", "model", help="Model factory: torchvision:NAME, timm:NAME, hf:CLASS or pkg.module:Class.")
@click.option("--input-shape", callback=_shape,
              help="Input shape to trace with (default 1,3,224,224 for torchvision/timm, 1,16 token ids for hf text).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str), help="Spec file to write (default: stdout).")
@click.option("--skip-unsupported", is_flag=True, help="Mark channels behind ops prunectl cannot cut \"prune\": false.")
@click.option("--trust-pickle", is_flag=True, help="Allow unpickling a whole nn.Module.")
@click.option("--module", help="Trace only this submodule (e.g. backbone of a detector); --input-shape is its input.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@_handle_errors
def spec_command(checkpoint: str | None, output: str | None, quiet: bool, **options: Any) -> None:
    """Write the spec of a model by tracing it (torch.fx, or torch.export where fx fails), ready to
    edit and pass to --spec.

    Example: prunectl spec --model torchvision:resnet50 -o spec.json
    """
    traced = api.trace_spec(checkpoint, **options)
    text = json.dumps(traced.spec.to_json(), indent=2)
    if output is None:
        click.echo(text)
        return
    api.write_traced_spec(traced, output)
    if not quiet:
        render.traced_summary(Console(), traced, output)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON on stdout.")
@_handle_errors
def criteria(as_json: bool) -> None:
    """List the channel-importance criteria installed (built-in and plugins).

    Example: prunectl criteria --json
    """
    rows = api.criteria()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        render.criteria_table(Console(), rows)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="HTML file to write (default: BUNDLE/report.html); its PNGs go beside it.")
@_output_options
@_handle_errors
def report(bundle: str, output: str | None, quiet: bool, as_json: bool) -> None:
    """Write a self-contained HTML report of BUNDLE: widths chart, totals, checks, files.

    Example: prunectl report out/ -o out-report.html
    """
    from .html_report import write_report  # matplotlib is imported only when a report is asked for

    written = write_report(bundle, output)
    if as_json:
        click.echo(json.dumps({"html": str(written.html), "images": [str(p) for p in written.images]}, indent=2))
    elif not quiet:
        Console().print(f"[green]ok[/green] {written.html} (+ {', '.join(p.name for p in written.images)})")


@cli.command("auto")
@click.argument("checkpoint", type=click.Path(dir_okay=True, path_type=str))
@click.option("--spec", type=click.Path(dir_okay=False, path_type=str), help="Sidecar spec JSON (traced when omitted).")
@click.option("--model", "model", help="Model factory for a bare state_dict.")
@click.option("--task", required=True, help="Task plugin giving data, loss, metric (e.g. digits).")
@click.option("--max-drop", type=float, default=0.5, show_default=True,
              help="Accuracy points the validation metric may lose against the original.")
@click.option("--target-macs", type=float, help="Target mode (NetAdapt): keep this fraction of the MACs.")
@click.option("--target-params", type=float, help="Target mode (NetAdapt): keep this fraction of the parameters.")
@click.option("--criterion", help="Which channels go (default: the spec's, else l1).")
@click.option("--epochs", type=int, default=3, show_default=True, help="Retraining epochs per step (at most).")
@click.option("--final-epochs", type=int, default=0, show_default=True, help="A long fine-tune at the end.")
@click.option("--early-stop/--full-retrain", default=True, show_default=True,
              help="Stop each retrain once back within --max-drop (CAC), or run every epoch and keep the best.")
@click.option("--budget-minutes", type=float, help="Stop searching after this much wall time.")
@click.option("--max-steps", type=int, default=1000, show_default=True, help="Stop after this many search steps.")
@click.option("--rates", default="0.2,0.1,0.0", show_default=True, help="CAC: candidate rates per layer and step.")
@click.option("--loss-margin", type=float, default=0.5, show_default=True, help="CAC: loss margin of the thresholds.")
@click.option("--step-fraction", type=float, help="NetAdapt: resource saved per step, as a fraction of the original.")
@click.option("--round-to", type=int, help="Kept channel counts are multiples of this.")
@click.option("--min-channels", type=int, help="Never keep fewer channels than this in a layer.")
@click.option("-o", "--output", type=click.Path(path_type=str), help="Bundle directory (default: NAME-auto).")
@click.option("--onnx", is_flag=True, help="Also export model.onnx, checked with onnxruntime.")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT.auto-state after an interruption.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every step (same seed, same bundle).")
@click.option("--micro-batches", type=int, help="Split each batch in N parts (default: the number of processes).")
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads (1: bit-identical reruns).")
@_output_options
@_handle_errors
def auto_command(checkpoint: str, quiet: bool, as_json: bool, rates: str, **options: Any) -> None:
    """Find per-layer widths automatically: within --max-drop of the original accuracy (CAC), or
    toward --target-macs/--target-params (NetAdapt), retraining as it goes. Resumable.

    Example: prunectl auto mlp.pt --spec mlp.json --task digits --max-drop 0.5 -o out/
    """
    from .auto.search import AutoOptions, auto
    from .render_auto import AutoProgress

    try:
        parsed_rates = tuple(float(r) for r in rates.split(",") if r.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {rates!r}", param_hint="--rates") from None
    with AutoProgress(quiet or as_json) as progress:
        result = auto(checkpoint, AutoOptions(rates=parsed_rates, **options), events=progress)
    if as_json:
        click.echo(json.dumps({"output": str(result.output) if result.output else None, "history": result.history,
                               "stopped_because": result.stopped_because, "wall_seconds": result.wall_seconds},
                              indent=2))
    elif not quiet and result.output is not None:
        from .render_auto import auto_summary

        auto_summary(Console(), result)


@cli.command("finetune")
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--task", required=True, help="Task plugin giving data, loss, metric (e.g. digits).")
@click.option("--epochs", type=int, help="Epochs (default: the task's, else 5).")
@click.option("-o", "--output", type=click.Path(path_type=str), help="New bundle directory (default: replace BUNDLE).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the shuffling and dropout.")
@click.option("--micro-batches", type=int, help="Split each batch in N parts (default: the number of processes).")
@_output_options
@_handle_errors
def finetune_command(bundle: str, quiet: bool, as_json: bool, **options: Any) -> None:
    """Fine-tune BUNDLE's pruned model on a task and write a new verified bundle.

    Example: prunectl finetune out/ --task digits --epochs 10 -o out-ft/
    """
    from .auto.refine import finetune_bundle
    from .render_auto import AutoProgress

    with AutoProgress(quiet or as_json) as progress:
        result = finetune_bundle(bundle, options.pop("task"), events=progress, **options)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        Console().print(f"[green]ok[/green] {result['output']}: validation {result['accuracy_before']:.2f} -> "
                        f"{result['accuracy_after']:.2f} after {result['epochs']} epochs")


def main() -> None:
    cli(prog_name="prunectl")
