"""Memory guards: estimate what a run will allocate before allocating it.

A spec, a manifest or a command line can ask for an absurd amount of memory (an input shape
of [65536, 65536], a manifest whose ``rebuild.args`` say 10**9 channels). Letting torch try
ends in a raw allocator error at best and in the kernel's OOM killer at worst, so the sizes
are checked first:

- ``check_input``: the verification batches of an input shape (exact arithmetic on Python
  ints, so an overflowing shape is caught too);
- ``check_fits``: a model built on the ``meta`` device (shapes only, no storage) against the
  shapes of the weights that will be loaded into it, before the real model is allocated;
- ``check_prune``: parameters (prune holds about four copies: original, soft, hard, rebuilt)
  plus activations: a meta-device forward pass finds the largest single layer output, and a
  no_grad forward holds about four such tensors at once (a layer's input and output, a
  residual, a temporary), times two for the soft and hard models compared side by side.

The limit is ``--max-memory`` or, by default, 80% of the memory available when the run
starts (``/proc/meminfo`` MemAvailable, else ``os.sysconf``).
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import PrunectlError, SpecError, UnsupportedError
from ..layers.resize import apply_resize
from ..models.inputs import torch_dtype
from .meta import meta_model
from .state_dict import load_weights

DEFAULT_FRACTION = 0.8
PRUNE_MODEL_COPIES = 4  # original, soft copy, hard copy, rebuilt model
LIVE_ACTIVATIONS = 8  # 4 live tensors of the largest layer output per forward, soft and hard side by side
VERIFY_BATCHES = 3  # make_inputs' default count (models/inputs.py)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4}


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping, or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def return_freed_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc's ``malloc_trim``; a no-op elsewhere).

    glibc serves allocations below its mmap threshold from its heap, and that threshold rises to
    32 MiB after the first large block is freed, so most of a model's tensors (a few MiB each) live
    there; freeing them keeps the pages in the process. Without a trim after loading and after
    each float64 proof, the peak RSS of a prune counts every copy ever made, not the copies held.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def default_limit() -> int | None:
    available = available_memory()
    return None if available is None else int(available * DEFAULT_FRACTION)


def parse_size(text: str | int | None) -> int | None:
    """``"4G"``, ``"512MiB"``, ``"1.5g"``, ``"1000000"`` -> bytes; None stays None."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", str(text))
    if not match:
        raise SpecError(f"--max-memory: expected a size like 4G, 512M or 1000000, got {text!r}")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise SpecError(f"--max-memory: must be positive, got {text!r}")
    return size


def format_size(size: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def resolve_limit(max_memory: int | str | None) -> int | None:
    return parse_size(max_memory) if max_memory is not None else default_limit()


def _limit_text(limit: int, given: bool) -> str:
    return f"--max-memory {format_size(limit)}" if given else (
        f"the default limit of {format_size(limit)} (80% of available memory; raise it with --max-memory)")


def check_input(shape: tuple[int, ...], dtype: str, limit: int | None, where: str = "input.shape",
                given: bool = False) -> None:
    """The verification batches of ``shape`` fit in ``limit`` (exact integer arithmetic)."""
    numel = math.prod(int(d) for d in shape)
    # make_inputs draws in float64 and converts: one float64 temporary besides the batches
    needed = numel * (VERIFY_BATCHES * _ITEMSIZE.get(dtype, 8) + 8)
    if numel >= 1 << 62:
        raise SpecError(f"{where}: {list(shape)} has {numel:.3g} elements, more than a tensor can hold")
    if limit is not None and needed > limit:
        raise SpecError(f"{where}: {list(shape)} needs about {format_size(needed)} for the verification "
                        f"inputs alone, more than {_limit_text(limit, given)}")


def model_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def check_fits(factory: str, args: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], source: Any,
               resize: Mapping[str, Mapping[str, int]] | None = None) -> None:
    """Fail like a strict load would, but before allocating: a model built from ``factory(**args)``
    (and ``resize``) must have exactly the keys and shapes of the weights about to be loaded."""
    skeleton = meta_model(factory, args) if shapes else None
    if skeleton is None:
        return
    if resize:
        try:
            apply_resize(skeleton, dict(resize))
        except PrunectlError:
            return  # the real rebuild reports it, with its own wording
    weights = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    load_weights(skeleton, weights, source)


def safetensors_shapes(path: Any) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header, without reading the data ({} if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt", device="cpu") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception:  # the real load reports unreadable files
        return {}


def largest_activation(skeleton: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> int | None:
    """Bytes of the largest leaf module output of one forward pass on meta tensors (None if it can't run)."""
    largest = 0

    def count(_module, _inputs, output):
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    leaves = [m for m in skeleton.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            skeleton(torch.empty(shape, dtype=dtype, device="meta"))
    except Exception:
        return None
    finally:
        for handle in handles:
            handle.remove()
    return largest


_GROWING = ("Transpose", "Upsample", "PixelShuffle", "Fold", "Embedding")


def quick_activation_bound(model: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> int | None:
    """An upper bound on the largest layer output without running anything: every position of
    the input (batch x spatial) times the widest layer. None where a module can grow the spatial
    size or the width per position (transposed convs, upsampling, embeddings)."""
    widths = [shape[1] if len(shape) > 1 else shape[0]]
    for module in model.modules():
        if any(word in type(module).__name__ for word in _GROWING):
            return None
        for attr in ("out_channels", "out_features", "num_features"):
            if isinstance(getattr(module, attr, None), int):
                widths.append(getattr(module, attr))
    positions = math.prod(shape) // widths[0] if dtype.is_floating_point else math.prod(shape)
    return positions * max(widths) * max(torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4, 4)


def check_prune(model: nn.Module, factory: str | None, args: Mapping[str, Any], shape: tuple[int, ...],
                dtype: torch.dtype, limit: int | None, given: bool = False) -> dict[str, int | None]:
    """Estimated peak of a prune run; UnsupportedError when it exceeds ``limit``."""
    params = model_bytes(model)
    largest = quick_activation_bound(model, shape, dtype)
    # the precise meta-device pass costs ~1 s of one-time kernel setup: only when the bound is too high
    if largest is None or limit is None or PRUNE_MODEL_COPIES * params + LIVE_ACTIVATIONS * largest > limit:
        skeleton = meta_model(factory, args) if factory and limit is not None else None
        largest = largest_activation(skeleton, shape, dtype) if skeleton is not None else largest
    activations = None if largest is None else LIVE_ACTIVATIONS * largest
    estimate = PRUNE_MODEL_COPIES * params + (activations or 0)
    if limit is not None and estimate > limit:
        detail = f"{format_size(params)} of weights x {PRUNE_MODEL_COPIES} copies"
        if largest:
            detail += (f" + {LIVE_ACTIVATIONS} x {format_size(largest)}, the largest layer output "
                       f"on input {list(shape)}")
        raise UnsupportedError(f"{type(model).__name__}: pruning needs about {format_size(estimate)} "
                               f"({detail}), more than {_limit_text(limit, given)}")
    return {"params_bytes": params, "activation_bytes": activations, "estimate_bytes": estimate}


def guard_prune(model: nn.Module, model_ref: Any, shape: tuple[int, ...], dtype: str,
                max_memory: int | str | None) -> dict[str, int | None]:
    """Both checks of a prune run, with the limit of ``max_memory`` (or the default)."""
    given = max_memory is not None
    limit = resolve_limit(max_memory)
    check_input(shape, dtype, limit, given=given)
    factory, args = (model_ref.factory, model_ref.args) if model_ref is not None else (None, {})
    return check_prune(model, factory, args, shape, torch_dtype(dtype), limit, given=given)
