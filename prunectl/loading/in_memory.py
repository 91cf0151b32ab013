"""In-memory inputs of the in-process API: a model object, example inputs, and the user's own
batches, turned into what the file path of the pipeline reads (``Loaded``, ``InputSpec``,
``CalibrationData``), so ``prunectl.prune(model)`` and ``prunectl prune ckpt.pt`` run one pipeline.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

from ..errors import SpecError, UnsupportedError
from ..formats.spec import InputSpec, ModelRef
from .checkpoint import Loaded
from .data import CalibrationData, default_loss, fits_input
from .meta import meta_model

Loss = Callable[[Any, torch.Tensor], torch.Tensor]


def loaded_module(model: Any, model_ref: ModelRef | None = None, caller: str = "prunectl.prune") -> Loaded:
    """A private copy of ``model`` on the CPU, as a checkpoint file would load it.

    The pipeline masks the model it prunes in place; the user's own model (and its device,
    training mode and optimizer state) is left as it was. ``torch.nn.utils.prune`` masks on it
    are made permanent in the copy, as ``*_orig``/``*_mask`` pairs are folded when a file is read.
    ``model_ref``: how ``prunectl.load`` rebuilds it; default: its class with no arguments."""
    if not isinstance(model, nn.Module):
        raise SpecError(f"{caller}: expected a torch.nn.Module or a checkpoint path, got {type(model).__name__}")
    # torch.nn.utils.prune leaves the masked weight as a non-leaf attribute, which deepcopy refuses:
    # its copy is a detached one (the mask is made permanent in the copy below anyway)
    memo: dict[int, Any] = {}
    for module, name in pruned_tensors(model):
        masked = getattr(module, name, None)
        if isinstance(masked, torch.Tensor):
            memo[id(masked)] = masked.detach().clone()
    own = copy.deepcopy(model, memo).cpu().eval()
    for module, name in pruned_tensors(own):
        torch_prune.remove(module, name)
    ref = model_ref or _own_class(model, caller)
    return Loaded(own, ref, Path(f"in-memory:{type(model).__name__}"), state_dict_sha256(own))


def pruned_tensors(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, tensor name)`` of every torch.nn.utils.prune reparametrisation on ``model``."""
    return [(module, hook._tensor_name) for module in model.modules()
            for hook in list(module._forward_pre_hooks.values()) if isinstance(hook, torch_prune.BasePruningMethod)]


def _own_class(model: nn.Module, caller: str) -> ModelRef:
    """The model's class with no arguments, when that rebuilds the same layers (a bundle is
    rebuilt without pickle); otherwise the caller must say how."""
    ref = ModelRef.of_class(model)
    skeleton = meta_model(ref.factory, {})
    names = [name for name, _ in model.named_modules()]
    if skeleton is None or [name for name, _ in skeleton.named_modules()] != names:
        raise SpecError(f"{caller}: {type(model).__qualname__}() does not rebuild this model (its layers "
                        "come from constructor arguments, or it is a container such as nn.Sequential); say how "
                        "it is built: model='package.module:factory' and factory_args={...}")
    return ref


def state_dict_sha256(model: nn.Module) -> str:
    """A digest of the weights, as a file's sha256 identifies a checkpoint: names, dtypes,
    shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().contiguous().reshape(-1)
        digest.update(f"{key}|{flat.dtype}|{list(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def example_input(example_inputs: Any) -> torch.Tensor:
    """The one input tensor of ``example_inputs`` (a tensor, or a tuple/list holding one)."""
    example = example_inputs
    if isinstance(example, (tuple, list)):
        if len(example) != 1:
            raise UnsupportedError(f"example_inputs: prunectl traces and proves models of one input tensor; "
                                   f"got {len(example)} inputs")
        example = example[0]
    if not isinstance(example, torch.Tensor):
        raise SpecError(f"example_inputs: expected a tensor (or a 1-tuple of one), got {type(example).__name__}")
    if example.dim() == 0:
        raise SpecError("example_inputs: expected a batch (a tensor with a batch dimension), got a scalar")
    return example.detach().cpu()


def input_spec_of(example: torch.Tensor) -> InputSpec:
    return InputSpec(tuple(example.shape), str(example.dtype).removeprefix("torch."))


def calibration_batches(batches: Iterable[Any], example: torch.Tensor | None, loss: Loss | None = None,
                        source: str = "data") -> CalibrationData:
    """The user's loader (a DataLoader or any iterable) as calibration data.

    A batch is a tensor of inputs, an ``(inputs, targets, ...)`` tuple or list, or a mapping with
    ``inputs``/``targets`` (or ``input``/``target``, ``x``/``y``). ``loss(outputs, targets)``:
    default cross-entropy for integer targets, mean squared error for floating ones. Every batch
    must match the example input past the batch dimension (token ids: the same dimensions)."""
    if isinstance(batches, (torch.Tensor, Mapping)) or not isinstance(batches, Iterable):
        raise SpecError(f"{source}: expected a DataLoader or an iterable of batches, got {type(batches).__name__}")
    read: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for number, batch in enumerate(batches):
        inputs, targets = _split(batch, f"{source}: batch {number}")
        if example is not None:
            _check_shape(inputs, example, f"{source}: batch {number}")
        read.append((inputs, targets))
    if not read:
        raise SpecError(f"{source}: the loader gave no batches")
    with_targets = [targets is not None for _, targets in read]
    if any(with_targets) and not all(with_targets):
        raise SpecError(f"{source}: some batches have targets and some do not")
    if loss is None and all(with_targets):
        loss = default_loss(read[0][1])
    if loss is not None and not callable(loss):
        raise SpecError(f"loss: expected a callable loss(outputs, targets), got {type(loss).__name__}")
    return CalibrationData(tuple(read), loss if all(with_targets) else None, source)


def _split(batch: Any, where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, Mapping):
        inputs = next((batch[k] for k in ("inputs", "input", "x", "input_ids") if k in batch), None)
        targets = next((batch[k] for k in ("targets", "target", "y", "labels") if k in batch), None)
    elif isinstance(batch, (tuple, list)):
        inputs, targets = (batch[0] if batch else None), (batch[1] if len(batch) > 1 else None)
    else:
        inputs, targets = batch, None
    if not isinstance(inputs, torch.Tensor) or inputs.dim() == 0:
        raise SpecError(f"{where}: expected input tensors with a batch dimension, got {type(inputs).__name__}")
    if targets is not None and (not isinstance(targets, torch.Tensor) or len(targets) != len(inputs)):
        raise SpecError(f"{where}: targets must be a tensor with one entry per input ({len(inputs)})")
    return inputs.detach().cpu(), None if targets is None else targets.detach().cpu()


def _check_shape(inputs: torch.Tensor, example: torch.Tensor, where: str) -> None:
    if inputs.is_floating_point() != example.is_floating_point():
        raise SpecError(f"{where}: inputs are {inputs.dtype}, the example input is {example.dtype}")
    if not fits_input(inputs, example.shape):
        raise SpecError(f"{where}: inputs of shape {list(inputs.shape)} do not fit the model's input "
                        f"{list(example.shape)} (past the batch dimension)")
