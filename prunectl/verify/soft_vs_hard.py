"""Soft vs hard: the masked original and the model ``prunectl.load`` rebuilds must compute the same.

Pass criterion: ``max|a - b| <= tolerance * max(1, max|a|)`` (compare.py). When the soft and
hard model disagree, forward hooks find the first listed layer whose kept outputs differ, so
the error names where the spec or the surgery went wrong.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator

import torch
import torch.nn as nn

from ..cut.plan import ModuleCut
from ..errors import VerificationError
from ..layers import kinds as L
from ..layers.attention import unfused_attention
from ..measure.size import mac_counter, macs_of
from ..models.forward import run
from .compare import Comparison, compare


def run_and_count(model: nn.Module, x: torch.Tensor, what: str) -> tuple[list[torch.Tensor], int]:
    """``run`` and the multiply-accumulates it took, counted as ``report.count_macs`` counts them."""
    with mac_counter() as counter:
        outputs = run(model, x, what)
    return outputs, macs_of(counter)


def soft_vs_hard(soft: nn.Module, hard: nn.Module, inputs: list[torch.Tensor], tolerance: float,
                 plan: dict[str, ModuleCut], layer_order: list[str]) -> Comparison:
    """Worst comparison over all inputs; raises VerificationError naming the first bad layer.

    Besides the model output (the pass criterion above), every listed layer's kept outputs are
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
            raise VerificationError(
                f"{exc}; first diverging layer: "
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
