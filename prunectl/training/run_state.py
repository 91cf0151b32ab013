"""A resumable run's state: one file, replaced atomically (``auto``'s search, ``finetune --distill``).

``DIR/state.pt`` holds the run's JSON-able state (counters, logs, the fingerprint of its inputs
and options), the model's weights and, where the run has them, more tensors (an optimizer's and
a learning-rate scheduler's state_dicts). It is written to a temporary file in the same
directory, flushed to disk, then renamed over the old one (``os.replace``), so a kill at any
instant (SIGKILL included) leaves either the previous complete state or the new one, never a
torn file. It is read back with ``torch.load(weights_only=True)``: nothing is unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, SpecError

STATE_NAME = "state.pt"
STATE_VERSION = 1  # "tensors" is optional, so auto's states of before read as they did


@dataclass
class SavedState:
    data: dict[str, Any]
    weights: dict[str, torch.Tensor]
    tensors: dict[str, Any] = field(default_factory=dict)  # e.g. {"optimizer": ..., "scheduler": ...}


def save_state(directory: Path, state: SavedState, what: str) -> None:
    """Replace ``directory/state.pt`` atomically; ``what`` names the run in errors ("auto state")."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{STATE_NAME}.tmp-{os.getpid()}"
        # key order kept: it is the bundle files' order
        payload = {"version": torch.tensor(STATE_VERSION), "state_json": json.dumps(state.data),
                   "weights": {k: v.detach().clone().contiguous() for k, v in state.weights.items()}}
        if state.tensors:
            payload["tensors"] = state.tensors
        with open(temporary, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / STATE_NAME)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise SpecError(f"{directory}: cannot write the {what} ({exc.strerror or exc})") from None


def load_state(directory: Path, what: str) -> SavedState | None:
    """The state of the last checkpoint, or None when there is none."""
    path = directory / STATE_NAME
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if int(payload["version"]) != STATE_VERSION:
            raise ValueError(f"unsupported state version {int(payload['version'])}")
        return SavedState(json.loads(payload["state_json"]), dict(payload["weights"]),
                          dict(payload.get("tensors", {})))
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc}); "
                              f"remove {directory} to start over") from None


def remove_state(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def first_difference(started: dict[str, Any], now: dict[str, Any]) -> str | None:
    """``"KEY: A when the run started, B now"`` for the first key whose value differs, else None."""
    for key in sorted(set(started) | set(now)):
        if started.get(key) != now.get(key):
            return f"{key}: {started.get(key)!r} when the run started, {now.get(key)!r} now"
    return None
