"""Click options shared by several commands: one declaration each, so that ``prune``, ``auto``,
``finetune`` and ``spec`` cannot drift apart in name, default or help text. Defaults and choices
come from ``prunectl.options``, where the library's own defaults are."""
from __future__ import annotations

from typing import Any, Callable

import click

from .. import options as O

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def parse_shape(_ctx: Any, _param: Any, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(part) for part in value.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,3,32,32, got {value!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise click.BadParameter(f"expected positive integers like 1,3,32,32, got {value!r}")
    return shape


def parse_amount(value: str | float | int) -> float | int:
    """``--rate``: an integer literal is a count (torch.nn.utils.prune's int amount), else a fraction."""
    if isinstance(value, (int, float)):
        return value
    text = value.strip()
    try:
        return int(text) if text.lstrip("+-").isdigit() else float(text)
    except ValueError:
        raise click.BadParameter(f"expected a fraction like 0.5 or an integer count, got {value!r}") from None


def _stack(*decorators: Decorator) -> Decorator:
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command
    return apply


def output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """-q/--quiet and --json: what every command prints."""
    command = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(command)
    return click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(command)


spec_option = click.option("--spec", type=click.Path(dir_okay=False, path_type=str),
                           help="Sidecar spec JSON (or CAC model_info); traced from the model when omitted.")
model_option = click.option("--model", "model",
                            help="Model factory: pkg.module:Class, torchvision:NAME, timm:NAME or hf:CLASS.")
input_shape_option = click.option("--input-shape", callback=parse_shape,
                                  help="Input shape for tracing and checks, e.g. 1,3,32,32.")
trust_pickle_option = click.option("--trust-pickle", is_flag=True,
                                   help="Allow unpickling a whole nn.Module (runs code from the file).")
skip_unsupported_option = click.option(
    "--skip-unsupported", is_flag=True,
    help="Traced spec: leave channels behind ops prunectl cannot cut unpruned instead of failing.")
module_option = click.option("--module", help="Trace and verify only this submodule (e.g. backbone of a detector); "
                             "--input-shape is its input.")
onnx_option = click.option("--onnx", is_flag=True, help="Also export model.onnx, checked with onnxruntime.")
opset_option = click.option("--opset", type=int, default=O.DEFAULT_OPSET, show_default=True, help="ONNX opset.")
bundle_output_option = click.option("-o", "--output", type=click.Path(path_type=str), help="Bundle directory to write.")
task_option = click.option("--task", required=True, help="Task plugin giving data, loss, metric (e.g. digits).")
exclude_option = click.option("--exclude", multiple=True, metavar="PATTERN",
                              help="Never prune layers matching this glob (repeatable).")
only_option = click.option("--only", multiple=True, metavar="PATTERN",
                           help="Prune only the channel groups holding a layer matching this glob (repeatable; "
                           "the layers coupled with it are cut with it).")
lr_option = click.option("--lr", type=float, help="Fine-tuning learning rate (default: the task optimizer's, "
                         "else SGD's 0.01 with a cosine decay; with --distill --data AdamW's "
                         f"{O.DEFAULT_DISTILL_LR:g}).")
device_option = click.option(
    "--device", default=O.DEFAULT_DEVICE, show_default=True, metavar="cpu|cuda|cuda:N|mps",
    help="Where the model runs for data-driven scoring, fine-tuning and the proof; the bundle is written from "
    "CPU tensors (a device that is not here: exit 3).")
micro_batches_option = click.option("--micro-batches", type=int,
                                    help="Split each batch in N parts (default: the number of processes).")

# how channels are chosen: what a spec may also set (the option wins)
selection_options = _stack(
    click.option("--criterion", help=f"Channel importance criterion (default: the spec's, else "
                 f"{O.DEFAULT_CRITERION}, or {O.DEFAULT_DATA_CRITERION} when prune is given --data; "
                 "see `prunectl criteria`)."),
    click.option("--round-to", type=int, help="Kept channel counts are multiples of this."),
    click.option("--round-mode", type=click.Choice(O.ROUND_MODES),
                 help="Which multiple of --round-to a width goes to: up (default, keep more), down "
                 "(45 -> 40 with --round-to 8), nearest."),
    click.option("--min-channels", type=int, help="Never keep fewer channels than this in a layer."),
    click.option("--group-reduce", type=click.Choice(O.GROUP_REDUCTIONS),
                 help="How coupled layers' scores combine; 'union' is CAC's union of kept channels."),
)

tokenizer_option = click.option("--tokenizer", type=click.Path(exists=True, path_type=str),
                                help="Text data: the model's tokenizer.json or a folder holding it (default: the "
                                "checkpoint's own, a Hugging Face folder or a bundle's hf/).")
# text calibration for language models (loading/text_data.py)
text_data_options = _stack(
    tokenizer_option,
    click.option("--calib-seq-len", type=int, default=O.DEFAULT_CALIB_SEQ_LEN, show_default=True,
                 help="Text data: tokens per calibration window."),
    click.option("--calib-tokens", type=int, default=O.DEFAULT_CALIB_TOKENS, show_default=True,
                 help="Text data: calibration tokens in all (windows drawn with --seed)."),
)
