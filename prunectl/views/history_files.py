"""The files an ``auto`` or ``finetune`` run adds to its bundle: history.json and its chart."""
from __future__ import annotations

from typing import Any

from ..formats.history import HISTORY_NAME, history_bytes


def history_files(history: list[dict[str, Any]], size_key: str = "params") -> dict[str, bytes]:
    """history.json, and history.png when matplotlib (the ``plot`` extra) is installed."""
    files = {HISTORY_NAME: history_bytes(history)}
    try:
        from .charts import history_chart

        files["history.png"] = history_chart(history, size_key=size_key)
    except Exception:  # no matplotlib: the JSON is the record, the chart is a convenience
        pass
    return files
