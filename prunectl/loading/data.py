"""Calibration data for data-driven criteria: ``--data FILE.pt|FILE.npz`` or ``--data TASK``.

A tensor file holds the inputs and, optionally, targets:
- ``.pt``/``.pth`` (read with ``weights_only=True``): a tensor of inputs, or a dict
  ``{"inputs": T, "targets": T}``;
- ``.npz`` (read without pickle): arrays ``inputs`` and optional ``targets``.
Integer targets get the cross-entropy loss, floating ones mean squared error. Any other
``--data`` value names a task plugin (entry-point group ``prunectl.tasks``), which supplies
its own batches and loss. Plain text for a language model is text_data.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import registry
from ..errors import SpecError
from ..formats.spec import InputSpec
from ..models.inputs import torch_dtype
from ..tasks import get_task

Loss = Callable[[Any, torch.Tensor], torch.Tensor]
BATCH_SIZE = 64


@dataclass(frozen=True)
class CalibrationData:
    """Batches of ``(inputs, targets or None)`` and the loss to differentiate (if targets)."""

    batches: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]
    loss: Loss | None
    source: str
    details: dict[str, Any] | None = None  # how text was cut into windows (text_data.py), for the manifest

    @property
    def has_targets(self) -> bool:
        return self.loss is not None and all(t is not None for _, t in self.batches)


def load_data(source: str | Path, dtype: torch.dtype = torch.float32) -> CalibrationData:
    """Read a tensor file or instantiate a task plugin; errors name the file or task."""
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth", ".npz"):
        if not path.is_file():
            raise SpecError(f"--data {source}: no such file")
        inputs, targets = _read_npz(path) if suffix == ".npz" else _read_pt(path)
        return from_tensors(inputs, targets, str(source), dtype)
    if registry.is_registered(registry.TASKS, str(source)):
        task = get_task(str(source))
        batches = tuple((x, y) for x, y in task.calibration_batches())
        if not batches:
            raise SpecError(f"--data {source}: the task gave no calibration batches")
        return CalibrationData(batches, task.loss, f"task:{source}")
    tasks = ", ".join(registry.available(registry.TASKS)) or "none installed"
    raise SpecError(f"--data {source}: expected a .pt/.npz tensor file or a task name (tasks: {tasks})")


def default_loss(targets: torch.Tensor) -> Loss:
    """Cross-entropy for integer targets (class indices), mean squared error for floating ones."""
    return F.mse_loss if targets.is_floating_point() else F.cross_entropy


def fits_input(inputs: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> bool:
    """Whether a batch can go where an input of ``shape`` goes: token ids of any length (the same
    number of dimensions), other inputs with the same shape past the batch dimension."""
    if not inputs.is_floating_point():
        return inputs.dim() == len(shape)
    return tuple(inputs.shape[1:]) == tuple(shape[1:])


def data_inputs(data: CalibrationData | None, spec: InputSpec, count: int = 1) -> list[torch.Tensor]:
    """Up to ``count`` inputs of the spec's batch size cut from the data's first batches, for the
    proof: token ids of any length, or inputs whose shape past the batch is the spec's (a data set
    of another shape is left to the criteria)."""
    found = []
    for inputs, _ in (data.batches if data is not None else ())[:count]:
        if inputs.is_floating_point() != (spec.dtype.startswith("float") or spec.dtype == "bfloat16"):
            continue
        if fits_input(inputs, spec.shape):
            found.append(inputs[: spec.shape[0]].to(torch_dtype(spec.dtype)))
    return found


def from_tensors(inputs: Any, targets: Any, source: str, dtype: torch.dtype = torch.float32,
                 batch_size: int = BATCH_SIZE) -> CalibrationData:
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 1 or len(inputs) == 0:
        raise SpecError(f"--data {source}: 'inputs' must be a non-empty tensor with a batch dimension")
    if inputs.is_floating_point():
        inputs = inputs.to(dtype)
    loss: Loss | None = None
    if targets is not None:
        if not isinstance(targets, torch.Tensor) or targets.dim() < 1 or len(targets) != len(inputs):
            raise SpecError(f"--data {source}: 'targets' must be a tensor with one entry per input "
                            f"({len(inputs)})")
        targets = targets.to(dtype) if targets.is_floating_point() else targets.long()
        loss = default_loss(targets)
    batches = tuple((inputs[i:i + batch_size], None if targets is None else targets[i:i + batch_size])
                    for i in range(0, len(inputs), batch_size))
    return CalibrationData(batches, loss, source)


def _read_pt(path: Path) -> tuple[Any, Any]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SpecError(f"--data {path}: not a readable tensor file ({type(exc).__name__})") from None
    if isinstance(content, torch.Tensor):
        return content, None
    if isinstance(content, dict) and "inputs" in content:
        unknown = set(content) - {"inputs", "targets"}
        if unknown:
            raise SpecError(f"--data {path}: unknown keys {sorted(unknown)}; expected 'inputs' and 'targets'")
        return content["inputs"], content.get("targets")
    raise SpecError(f"--data {path}: expected a tensor or a dict with 'inputs' (and optional 'targets')")


def _read_npz(path: Path) -> tuple[Any, Any]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as arrays:
            content = {key: torch.from_numpy(arrays[key].copy()) for key in arrays.files}
    except Exception as exc:
        raise SpecError(f"--data {path}: not a readable .npz file ({type(exc).__name__})") from None
    if "inputs" not in content:
        raise SpecError(f"--data {path}: no array named 'inputs' (found: {', '.join(sorted(content)) or 'none'})")
    return content["inputs"], content.get("targets")
