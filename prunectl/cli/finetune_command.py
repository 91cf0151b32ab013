"""``prunectl finetune``: a bundle fine-tuned on a task, or distilled from its original (text or a task's data)."""
from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console

from .. import options as O
from .app import cli
from .handling import handle_errors
from .options import device_option, lr_option, micro_batches_option, output_options, text_data_options
from .run_config import config_option

DISTILL_ONLY = ("data", "steps", "teacher", "tokenizer", "eval_data", "temperature", "task_loss_weight",
                "checkpoint_every")


@cli.command("finetune")
@click.argument("bundle", type=click.Path(path_type=str))
@config_option
@click.option("--task", help="Task plugin giving data, loss, metric (e.g. digits); with --distill, the data to "
              "distil on.")
@lr_option
@click.option("--epochs", type=int, help=f"Epochs (default: the task's, else {O.DEFAULT_FINETUNE_EPOCHS}); with "
              "--distill --task, passes over the task's training batches unless --steps is given.")
@click.option("--distill", is_flag=True,
              help="Train toward the original model's logits (KL) on --data (language models) or --task's data.")
@click.option("--data", help="--distill: a .txt file (or token ids .pt) to distil a language model on.")
@click.option("--steps", type=int, help="--distill: optimizer steps (with --task: default --epochs passes).")
@click.option("--teacher", type=click.Path(exists=True, path_type=str),
              help="--distill: the original model (default: the manifest's source, beside the bundle).")
@click.option("--temperature", type=float, help="--distill: softmax temperature of the KL (default 1).")
@click.option("--task-loss-weight", type=float,
              help="--distill: add this times the loss on the true labels: the task's loss, or a language "
              "model's next-token loss (default 0: the KL alone).")
@click.option("--checkpoint-every", type=int,
              help=f"--distill: save a resumable state beside the output every K steps (default "
              f"{O.DEFAULT_DISTILL_CHECKPOINT_EVERY}; 0: never); the same command again resumes from it.")
@text_data_options
@click.option("--eval-data", type=click.Path(dir_okay=False, path_type=str),
              help="--distill: a .txt file: perplexity before and after into report.json.")
@click.option("-o", "--output", type=click.Path(path_type=str), help="New bundle directory (default: replace BUNDLE).")
@click.option("--seed", type=int, default=O.DEFAULT_SEED, show_default=True, help="Seed of the shuffling and dropout.")
@device_option
@micro_batches_option
@output_options
@handle_errors
def finetune_command(bundle: str, quiet: bool, as_json: bool, task: str | None, distill: bool,
                     **options: Any) -> None:
    """Fine-tune BUNDLE's pruned model on a task, or distil the original into it, and write a new
    verified bundle. A distillation killed midway resumes when the same command is run again.

    Example: prunectl finetune out/ --task digits --epochs 10 -o out-ft/
    or: prunectl finetune out/ --distill --data calib.txt --steps 200 -o out-kd/
    or: prunectl finetune out/ --distill --task digits --temperature 4 -o out-kd/
    """
    if distill:
        _distill(bundle, quiet, as_json, task, options)
        return
    if task is None:
        raise click.UsageError("give --task TASK, or --distill with --data FILE --steps N or --task TASK")
    given = [f"--{key.replace('_', '-')}" for key in DISTILL_ONLY if options[key] is not None]
    if given:
        raise click.UsageError(f"{', '.join(given)}: with --distill only")
    from ..training.finetune_bundle import finetune_bundle
    from ..views.auto_progress import AutoProgress

    with AutoProgress(quiet or as_json) as progress:
        result = finetune_bundle(bundle, task, events=progress, epochs=options["epochs"], output=options["output"],
                                 seed=options["seed"], micro_batches=options["micro_batches"], lr=options["lr"],
                                 device=options["device"])
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        Console().print(f"[green]ok[/green] {result['output']}: validation {result['accuracy_before']:.2f} -> "
                        f"{result['accuracy_after']:.2f} after {result['epochs']} epochs")


def _distill(bundle: str, quiet: bool, as_json: bool, task: str | None, options: dict[str, Any]) -> None:
    if (options["data"] is None) == (task is None):
        raise click.UsageError("--distill needs --data FILE --steps N (a language model) or --task TASK")
    shared = {"events": None if quiet or as_json else _said_on_stderr, "output": options["output"],
              "seed": options["seed"], "teacher": options["teacher"], "device": options["device"],
              "micro_batches": options["micro_batches"],
              # the library's defaults where the option is not given
              **{key: options[key] for key in ("temperature", "task_loss_weight", "checkpoint_every")
                 if options[key] is not None}}
    if task is not None:
        given = [f"--{key.replace('_', '-')}" for key in ("tokenizer", "eval_data") if options[key] is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)}: with --distill --data only (text)")
        from ..training.distill_task import distill_task_bundle

        result = distill_task_bundle(bundle, task, steps=options["steps"], epochs=options["epochs"],
                                     lr=options["lr"], **shared)
    else:
        if options["steps"] is None:
            raise click.UsageError("--distill --data needs --steps N")
        if options["epochs"] is not None:
            raise click.UsageError("--epochs: with --task only (text distillation counts --steps)")
        from ..training.distill_bundle import distill_bundle

        lr = options["lr"] if options["lr"] is not None else O.DEFAULT_DISTILL_LR
        text = {key: options[key] for key in ("data", "steps", "tokenizer", "eval_data", "calib_seq_len",
                                              "calib_tokens")}
        result = distill_bundle(bundle, lr=lr, **text, **shared)
    if result["kl_before"] is None:  # a torchrun rank other than 0: rank 0 reports
        return
    perplexity = result.get("perplexity")
    shown = (f", validation {result['accuracy_before']:.2f} -> {result['accuracy_after']:.2f}" if task is not None
             else f", perplexity {perplexity['before']:.4g} -> {perplexity['after']:.4g}" if perplexity else "")
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not quiet:
        Console().print(f"[green]ok[/green] {result['output']}: KL to the teacher {result['kl_before']:.4g} -> "
                        f"{result['kl_after']:.4g} after {result['steps']} steps{shown}")


def _said_on_stderr(kind: str, info: dict[str, Any]) -> None:
    if kind == "resumed":
        click.echo(f"resuming at step {info['step']} of {info['steps']} from {info['state']}", err=True)
