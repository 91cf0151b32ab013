"""``--device``: where the model runs when prunectl runs it (scoring on data, fine-tuning, the proof).

``resolve_device("cuda:1")`` parses and checks a device string once, before anything is read or
written: ``cpu`` (the default), ``cuda``, ``cuda:N`` and ``mps``; an unknown string, ``cuda``
without CUDA, ``cuda:3`` with fewer GPUs or ``mps`` without MPS is a ``SpecError`` (exit 3)
naming the option and what is missing. Nothing here assumes CUDA: every CUDA or MPS call is
behind the device the caller asked for.

The pipeline keeps its models on the CPU: loading, the cut, the manifest and the saved weights
are CPU tensors whatever the device, so the bundle's bytes depend on the device only through what
was computed there (scores, trained weights, the proof's numbers; docs/decisions.md, "--device").
The stages that run a model move it for the block and back (``on_device``) and let the
caller's code feed it CPU batches (``InputsOn``).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn

from ..errors import SpecError

CPU = torch.device("cpu")
DEVICE_FORMS = "cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"(cpu|mps|cuda)(?::(\d+))?")


def resolve_device(device: str | torch.device | None, option: str = "--device") -> torch.device:
    """The ``torch.device`` named by ``device`` (None: the CPU), checked to be present here."""
    if device is None:
        return CPU
    text = str(device).strip().lower() if isinstance(device, (str, torch.device)) else None
    match = _DEVICE.fullmatch(text) if text is not None else None
    if match is None:
        raise SpecError(f"{option}: expected {DEVICE_FORMS}, got {device!r}")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise SpecError(f"{option} {text}: there is one CPU device; use cpu")
        return CPU
    if kind == "mps":
        if index not in (None, "0"):
            raise SpecError(f"{option} {text}: there is one MPS device; use mps")
        if not (torch.backends.mps.is_built() and torch.backends.mps.is_available()):
            raise SpecError(f"{option} {text}: MPS is not available here (no Apple GPU, or torch built without "
                            "it); use --device cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise SpecError(f"{option} {text}: CUDA is not available here (no GPU found, or torch built without "
                        "CUDA); use --device cpu")
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise SpecError(f"{option} {text}: there {'is' if count == 1 else 'are'} {count} CUDA device"
                        f"{'' if count == 1 else 's'} here (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", int(index) if index is not None else 0)


def device_name(device: torch.device) -> str:
    """``cpu``, ``cuda:0``, ``mps``: as a manifest records it."""
    return device.type if device.index is None or device.type != "cuda" else f"cuda:{device.index}"


def is_cpu(device: torch.device | str | None) -> bool:
    return device is None or torch.device(device).type == "cpu"


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (else buffer); the CPU for a model with neither.
    The training hooks' default: they work where the model already is."""
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return CPU if tensor is None else tensor.device


@contextmanager
def on_device(model: nn.Module, device: torch.device | str | None) -> Iterator[nn.Module]:
    """``model`` on ``device`` for the block, then back where it was (in place: the parameter
    objects stay the same, so views of its modules and an optimizer's parameters still hold).

    A model already there is left alone, so nested blocks (a task's metric inside a fine-tune)
    move nothing; on the CPU this does nothing at all. CPU -> device -> CPU is exact, bit for bit."""
    target = CPU if device is None else torch.device(device)
    before = device_of(model)
    if _same(before, target):
        yield model
        return
    model.to(target)
    try:
        yield model
    finally:
        model.to(before)


def _same(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def to_device(value: Any, device: torch.device | str | None) -> Any:
    """Every tensor in ``value`` (tensors, tuples, lists, dicts of them) on ``device`` (None: the CPU)."""
    if is_cpu(device) and not _holds_other_device(value):
        return value
    device = CPU if device is None else device
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(to_device(item, device) for item in value)
    if isinstance(value, list):
        return [to_device(item, device) for item in value]
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    return value


def _holds_other_device(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.device.type != "cpu"
    if isinstance(value, (tuple, list)):
        return any(_holds_other_device(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_other_device(item) for item in value.values())
    return False


def _first_tensor(values: Any) -> torch.Tensor | None:
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    return None


class InputsOn(nn.Module):
    """``model`` fed on ``device``: a caller's code (a task's metric, a user's ``evaluate`` or
    ``train``) calls it with CPU batches as it always has; the inputs go to the device and the
    outputs come back to the inputs' own device (a caller that moves its batches itself gets
    device outputs, as before). Parameters, ``train()``/``eval()`` and ``state_dict`` are the
    model's own (it is the only child, under the name ``model``)."""

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        self.model = model
        self.device = device

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        first = _first_tensor([*args, *kwargs.values()])
        home = first.device if first is not None else CPU
        output = self.model(*to_device(args, self.device), **to_device(kwargs, self.device))
        return to_device(output, home) if not _same(home, self.device) else output


def fed_on(model: nn.Module, device: torch.device | str | None) -> nn.Module:
    """``model`` itself on the CPU; an ``InputsOn`` wrapper elsewhere."""
    return model if is_cpu(device) else InputsOn(model, torch.device(device))


@contextmanager
def exact_float32(device: torch.device | str | None) -> Iterator[None]:
    """TF32 off for the block on CUDA (matmul and cuDNN), then as it was: a proof must not run
    float32 products with a 10-bit mantissa (torch's ``allow_tf32`` flags; the proof widens to
    float64, which TF32 never touches, but a model's own float32 paths must not round either)."""
    if is_cpu(device) or torch.device(device).type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
