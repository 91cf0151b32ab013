"""Terminal views of ``auto`` and ``finetune``: rich progress bars on stderr, a per-epoch log
line, one line per search step, and the final history table."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class AutoProgress:
    """An ``events`` callback for ``auto``/``fine_tune``; silent when ``quiet`` or not a process of rank 0."""

    def __init__(self, quiet: bool):
        import os

        self.console = Console(stderr=True)
        self.quiet = quiet or os.environ.get("RANK", "0") != "0"
        self.progress: Progress | None = None
        self.task_id = None

    def __enter__(self) -> AutoProgress:
        if not self.quiet:
            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=self.console, transient=True)
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if self.progress is None:
            return
        if kind == "epoch_start":
            if self.task_id is not None:
                self.progress.remove_task(self.task_id)
            self.task_id = self.progress.add_task(f"epoch {info['epoch']}/{info['epochs']}", total=info["batches"])
        elif kind == "batch" and self.task_id is not None:
            self.progress.advance(self.task_id)
        elif kind == "epoch":
            # a caller's own train() reports no loss or learning rate (training/finetune.py)
            loss = f"loss {info['train_loss']:.4f}  lr {info['lr']:.3g}  " if "lr" in info else ""
            self.progress.console.print(f"  epoch {info['epoch']}: {loss}validation {info['accuracy']:.2f}")
        elif kind == "candidate":
            self.progress.console.print(f"  proposal: {info['layer']} -> {info['width']} channels")
        elif kind == "accepted":
            self.progress.console.print(f"[green]step {info['step']}[/green] ({info['phase']}): params "
                                        f"{info['params']}, MACs {info['macs']}, validation {info['accuracy']:.2f}  "
                                        f"{info.get('widths', '')}")
        elif kind == "step" and info.get("accepted") is False:
            self.progress.console.print(f"[yellow]iteration {info['iteration']}: rejected[/yellow] {info['widths']}"
                                        f"{' (' + info['note'] + ')' if 'note' in info else ''}")


def auto_summary(console: Console, result: Any) -> None:
    history = result.history
    table = Table(title="auto: accepted steps", title_justify="left")
    for column in ("step", "phase", "params", "MACs", "validation", "widths"):
        table.add_column(column, justify="left" if column in ("phase", "widths") else "right")
    for h in history:
        widths = ", ".join(f"{k}={v}" for k, v in h.get("widths", {}).items())
        table.add_row(str(h["step"]), h.get("phase", ""), str(h["params"]), str(h["macs"]), f"{h['accuracy']:.2f}",
                      widths)
    console.print(table)
    first, last = history[0], history[-1]
    console.print(f"params {first['params']} -> {last['params']} ({100 * (1 - last['params'] / first['params']):.1f}% "
                  f"smaller), MACs {first['macs']} -> {last['macs']} "
                  f"({100 * (1 - last['macs'] / max(first['macs'], 1)):.1f}% fewer), validation "
                  f"{first['accuracy']:.2f} -> {last['accuracy']:.2f}")
    console.print(f"stopped: {result.stopped_because}; {result.wall_seconds:.1f} s; bundle: {result.output}")
