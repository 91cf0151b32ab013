"""Resumable state of an ``auto`` run: one file, replaced atomically after every search step.

``OUT.auto-state/state.pt`` holds the search state (JSON text: step counter, history, the
algorithm's own numbers, kept channels in the original numbering) and the current model's
weights. It is written to a temporary file in the same directory, flushed to disk, then
renamed over the old one (``os.replace``), so a kill at any instant (SIGKILL included) leaves
either the previous complete state or the new one, never a torn file. It is read back with
``torch.load(weights_only=True)``: nothing is unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, SpecError

STATE_NAME = "state.pt"
STATE_VERSION = 1


def state_dir_for(output: Path) -> Path:
    return output.with_name(output.name + ".auto-state")


def save_state(directory: Path, data: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{STATE_NAME}.tmp-{os.getpid()}"
        # key order kept: it is the bundle files' order
        payload = {"version": torch.tensor(STATE_VERSION), "state_json": json.dumps(data),
                   "weights": {k: v.detach().clone().contiguous() for k, v in weights.items()}}
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
        raise SpecError(f"{directory}: cannot write the auto state ({exc.strerror or exc})") from None


def load_state(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """(state, weights) of the last completed step, or None when there is none."""
    path = directory / STATE_NAME
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if int(payload["version"]) != STATE_VERSION:
            raise ValueError(f"unsupported state version {int(payload['version'])}")
        return json.loads(payload["state_json"]), dict(payload["weights"])
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable auto state ({type(exc).__name__}: {exc}); "
                              f"remove {directory} to start over") from None


def remove_state(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
