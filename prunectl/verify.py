"""Soft-vs-hard (and exported-vs-torch) comparisons.

Pass criterion of design.md: ``max|a - b| <= tolerance * max(1, max|a|)``. When the soft and
hard model disagree, forward hooks find the first listed layer whose kept outputs differ, so
the error names where the spec or the surgery went wrong.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn

from . import layers as L
from .attention import unfused_attention
from .errors import SpecError, VerificationError
from .plan import ModuleCut
from .spec import InputSpec

TOLERANCE = {"float32": 1e-5, "float64": 1e-9, "float16": 1e-2, "bfloat16": 5e-2}
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32}


@dataclass(frozen=True)
class Comparison:
    max_abs: float
    max_ref: float
    tolerance: float
    # soft_vs_hard: multiply-accumulates of the hard and the soft model's forward pass on the
    # first input (the soft model has the original's shapes, so its count is the original's)
    hard_macs: int | None = field(default=None, compare=False)
    soft_macs: int | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tolerance * max(1.0, self.max_ref)


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


def make_inputs(spec: InputSpec, seed: int, count: int = 3) -> list[torch.Tensor]:
    """The spec's input shape, ``count`` seeded random batches at growing scales."""
    generator = torch.Generator().manual_seed(seed)
    dtype = torch_dtype(spec.dtype)
    inputs = []
    for i in range(count):
        if dtype.is_floating_point:
            x = torch.randn(spec.shape, generator=generator, dtype=torch.float64) * (1.0 + 2.0 * i)
        else:
            x = torch.randint(0, 16, spec.shape, generator=generator)
        inputs.append(x.to(dtype))
    return inputs


def flat_outputs(output: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) model output, in a stable order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for key in output for t in flat_outputs(output[key])]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in flat_outputs(item)]
    if hasattr(output, "to_tuple"):  # transformers ModelOutput
        return flat_outputs(output.to_tuple())
    return []


def run_and_count(model: nn.Module, x: torch.Tensor, what: str) -> tuple[list[torch.Tensor], int]:
    """``run`` and the multiply-accumulates it took, counted as ``report.count_macs`` counts them."""
    from .report import mac_counter, macs_of

    with mac_counter() as counter:
        outputs = run(model, x, what)
    return outputs, macs_of(counter)


@torch.no_grad()
def run(model: nn.Module, x: torch.Tensor, what: str) -> list[torch.Tensor]:
    try:
        with unfused_attention():  # the soft model's masked norms must run (attention.py)
            outputs = flat_outputs(model(x))
    except Exception as exc:
        raise VerificationError(f"{what} failed on input {tuple(x.shape)}: {_short(exc)}") from None
    if not outputs:
        raise SpecError(f"{what} returned no tensors")
    return outputs


def compare(reference: Iterable[torch.Tensor], candidate: Iterable[torch.Tensor], tolerance: float,
            what: str) -> Comparison:
    max_abs, max_ref = 0.0, 0.0
    for i, (a, b) in enumerate(zip(reference, candidate, strict=True)):
        if a.shape != b.shape:
            raise VerificationError(f"{what}: output {i} has shape {tuple(b.shape)}, expected {tuple(a.shape)} "
                                    "(a layer feeding the model output was pruned: mark it arg: null or prune: false)")
        a64, b64 = a.detach().double(), b.detach().double()
        if a64.numel():
            diff = float((a64 - b64).abs().max())
            # NaN would slip through max() and <=: a NaN anywhere is an infinite difference
            max_abs = max(max_abs, float("inf") if diff != diff else diff)
            max_ref = max(max_ref, float(a64.abs().max()))
    return Comparison(max_abs, max_ref, tolerance)


def soft_vs_hard(soft: nn.Module, hard: nn.Module, inputs: list[torch.Tensor], tolerance: float,
                 plan: dict[str, ModuleCut], layer_order: list[str]) -> Comparison:
    """Worst comparison over all inputs; raises VerificationError naming the first bad layer.

    Besides the model output (design.md's criterion), every listed layer's kept outputs are
    compared on the first input relative to that layer's own magnitude: with random weights
    a deep network's output can vanish (1e-20), and ``max(1, ...)`` would then pass anything.
    """
    worst = Comparison(0.0, 0.0, tolerance)
    modules = dict(soft.named_modules())
    hard_macs = soft_macs = None
    for index, x in enumerate(inputs):
        # the first input also records every listed layer and counts both models' MACs, in the
        # same forward passes: the report needs no forward pass of its own
        names = layer_order if index == 0 else []
        try:
            with _taps(soft, names) as soft_layers, _taps(hard, names) as hard_layers:
                if index == 0:
                    hard_outputs, hard_macs = run_and_count(hard, x, "hard-pruned model")
                    soft_outputs, soft_macs = run_and_count(soft, x, "soft-pruned model")
                else:
                    hard_outputs = run(hard, x, "hard-pruned model")
                    soft_outputs = run(soft, x, "soft-pruned model")
                result = compare(soft_outputs, hard_outputs, tolerance, "soft vs hard")
        except VerificationError as exc:
            raise VerificationError(f"{exc}; first diverging layer: "
                                    f"{_where(first_divergence(soft, hard, x, plan, layer_order, tolerance))}") from None
        if not result.ok:
            layer = first_divergence(soft, hard, x, plan, layer_order, tolerance)
            raise VerificationError(
                f"soft and hard models differ: max |soft - hard| = {result.max_abs:.3g} > "
                f"{tolerance:g} * max(1, {result.max_ref:.3g}); first diverging layer: {_where(layer)}")
        if index == 0:
            layer = _first_bad_layer(soft_layers, hard_layers, modules, plan, layer_order,
                                     LAYER_TOLERANCE_FACTOR * tolerance, own_scale=True)
            if layer is not None:
                raise VerificationError(f"soft and hard models differ at layer {layer}: its kept outputs differ by "
                                        f"more than {LAYER_TOLERANCE_FACTOR * tolerance:g} of their magnitude")
        if result.max_abs / max(1.0, result.max_ref) >= worst.max_abs / max(1.0, worst.max_ref):
            worst = result
    return replace(worst, hard_macs=hard_macs, soft_macs=soft_macs)


# Per-layer checks compare each layer relative to its own magnitude; float32 accumulation in
# a narrower conv differs from the wide one by ~1e-7 of the summands, so allow 10x the output's.
LAYER_TOLERANCE_FACTOR = 10


def _where(layer: str | None) -> str:
    return layer if layer is not None else "none of the listed layers (the difference arises after the last one)"


@torch.no_grad()
def first_divergence(soft: nn.Module, hard: nn.Module, x: torch.Tensor, plan: dict[str, ModuleCut],
                     layer_order: list[str], tolerance: float, own_scale: bool = False) -> str | None:
    """The first listed layer (forward order) whose kept outputs differ between the models.

    ``own_scale``: tolerance relative to the layer's own max |output| instead of max(1, ...)."""
    captured: dict[str, dict[str, torch.Tensor]] = {}
    for tag, model in (("soft", soft), ("hard", hard)):
        with _taps(model, layer_order) as captured[tag], unfused_attention():
            try:
                model(x)
            except Exception:
                pass  # the captured prefix is enough to locate the problem
    return _first_bad_layer(captured["soft"], captured["hard"], dict(soft.named_modules()), plan, layer_order,
                            tolerance, own_scale)


def _first_bad_layer(soft_layers: dict[str, torch.Tensor], hard_layers: dict[str, torch.Tensor],
                     modules: dict[str, nn.Module], plan: dict[str, ModuleCut], layer_order: list[str],
                     tolerance: float, own_scale: bool) -> str | None:
    for name in layer_order:
        if name not in soft_layers:
            continue
        if name not in hard_layers:
            return f"{name} (the hard model failed before or at this layer)"
        a, b = soft_layers[name], hard_layers[name]
        cut = plan.get(name)
        if cut is not None and cut.out is not None:
            a = a.index_select(L.channel_dim(modules[name], a.dim()), cut.out)
        if a.shape != b.shape:
            return name
        if own_scale:
            # float32 differences are exact enough for a 1e-4 bound (a - b is exact when a and b
            # are within 2x of each other, else off by 2**-24 of itself); narrower types go to float64
            if a.dtype not in (torch.float32, torch.float64):
                a, b = a.double(), b.double()
            if a.numel() and not float((a - b).abs().max()) <= tolerance * float(a.abs().max()) + 1e-30:
                return name  # (written so that NaN counts as a difference)
        elif not compare([a], [b], tolerance, name).ok:
            return name
    return None


@contextmanager
def _taps(model: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named modules while the block runs the model."""
    store: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules()) if names else {}
    handles = [modules[name].register_forward_hook(_capture(store, name)) for name in names if name in modules]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _capture(store: dict[str, torch.Tensor], name: str):
    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            store[name] = output.detach()
    return hook


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
