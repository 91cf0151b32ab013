"""``history.json`` and ``history.png`` of an ``auto`` (or ``finetune``) run.

``history.json`` is a list, one entry per accepted step (step 0: the original model), in the
format ``prunectl report`` reads (prunectl/html_report.py): ``step``, ``params``, ``macs``,
``accuracy`` (validation metric of the task), plus ``widths`` (layer -> output width),
``phase`` ("original", "cac", "netadapt", "final-finetune", "finetune"), ``iteration`` (the
search step it came from), ``epochs`` (fine-tune epochs run), ``pruned_accuracy`` (right
after the cut, before fine-tuning), and either ``rates`` (CAC: the rate each layer was cut
by in this step) or ``layer`` + ``rate`` (NetAdapt: the one layer cut, by what fraction of
its width). Rejected proposals are not steps; they are listed in report.json's
``auto.trials``. Nothing time-dependent is recorded, so identical runs give identical files.
"""
from __future__ import annotations

from typing import Any

from ..jsonio import dump_json


def entry(step: int, sizes: dict[str, int], accuracy: float, widths: dict[str, int], phase: str,
          **extra: Any) -> dict[str, Any]:
    out = {"step": step, "params": sizes["params"], "macs": sizes["macs"], "accuracy": round(accuracy, 6),
           "phase": phase, "widths": widths}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def history_files(history: list[dict[str, Any]], size_key: str = "params") -> dict[str, bytes]:
    """history.json, and history.png when matplotlib (the ``plot`` extra) is installed."""
    files = {"history.json": dump_json(history)}
    try:
        from ..plots import history_chart

        files["history.png"] = history_chart(history, size_key=size_key)
    except Exception:  # no matplotlib: the JSON is the record, the chart is a convenience
        pass
    return files
