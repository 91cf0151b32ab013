"""Resumable state of an ``auto`` run: ``OUT.auto-state/state.pt``, replaced atomically after every search step.

The file is training/run_state.py's (shared with ``finetune --distill``): the search state as
JSON text (step counter, history, the algorithm's own numbers, kept channels in the original
numbering) and the current model's weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..training import run_state
from ..training.run_state import STATE_NAME, SavedState

__all__ = ["STATE_NAME", "load_state", "remove_state", "save_state", "state_dir_for"]
WHAT = "auto state"


def state_dir_for(output: Path) -> Path:
    return output.with_name(output.name + ".auto-state")


def save_state(directory: Path, data: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    run_state.save_state(directory, SavedState(data, weights), WHAT)


def load_state(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """(state, weights) of the last completed step, or None when there is none."""
    saved = run_state.load_state(directory, WHAT)
    return None if saved is None else (saved.data, saved.weights)


def remove_state(directory: Path) -> None:
    run_state.remove_state(directory)
