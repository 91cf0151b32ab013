"""``history.json``: one entry per accepted step of an ``auto`` (or ``finetune``) run.

A JSON list, step 0 the original model. Required: ``step``, ``params``, ``macs`` (integers) and
``accuracy`` (a number, the task metric, any scale). Optional: ``widths`` (layer -> output width),
``phase`` ("original", "cac", "cac-fine", "netadapt", "final-finetune", "finetune", "distill"),
``iteration`` (the search step it came from), ``epochs`` (fine-tune epochs run), ``pruned_accuracy``
(right after the cut, before fine-tuning), ``rates`` (CAC: the rate each layer was cut by in this step) or ``layer`` +
``rate`` (NetAdapt: the one layer cut, by what fraction of its width), and ``note``. Other keys
are errors. Rejected proposals are not steps; they are listed in report.json's ``auto.trials``.
Nothing time-dependent is recorded, so identical runs give identical files (docs/formats.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .strict_json import dump_json, read_json

HISTORY_NAME = "history.json"
_REQUIRED = {"step": int, "params": int, "macs": int, "accuracy": (int, float)}
_OPTIONAL = {"rate": (int, float), "note": str, "layer": str, "rates": dict, "widths": dict, "iteration": int,
             "epochs": int, "pruned_accuracy": (int, float), "phase": str}


def entry(step: int, sizes: dict[str, int], accuracy: float, widths: dict[str, int], phase: str,
          **extra: Any) -> dict[str, Any]:
    out = {"step": step, "params": sizes["params"], "macs": sizes["macs"], "accuracy": round(accuracy, 6),
           "phase": phase, "widths": widths}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def history_bytes(history: list[dict[str, Any]]) -> bytes:
    return dump_json(history)


def read_history(path: Path) -> list[dict[str, Any]]:
    """Parse and validate ``history.json``."""
    data = read_json(path, CheckpointError)
    if not isinstance(data, list):
        raise CheckpointError(f"{path}: expected a JSON list of steps")
    for index, item in enumerate(data):
        where = f"{path}: [{index}]"
        if not isinstance(item, dict):
            raise CheckpointError(f"{where}: expected an object")
        for key, kind in _REQUIRED.items():
            if key not in item:
                raise CheckpointError(f"{where}.{key}: missing")
            if not isinstance(item[key], kind) or isinstance(item[key], bool):
                raise CheckpointError(f"{where}.{key}: expected a number" if key == "accuracy"
                                      else f"{where}.{key}: expected an integer")
        for key in item:
            if key not in _REQUIRED and key not in _OPTIONAL:
                raise CheckpointError(f"{where}.{key}: unknown key (allowed: {', '.join([*_REQUIRED, *_OPTIONAL])})")
            if key in _OPTIONAL and (not isinstance(item[key], _OPTIONAL[key]) or isinstance(item[key], bool)):
                raise CheckpointError(f"{where}.{key}: wrong type")
    return data
