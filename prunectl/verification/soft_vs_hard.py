"""Soft vs hard: the masked original and the model ``prunectl.load`` rebuilds must compute the same.

Pass criterion: ``max|soft - hard| <= 1e-9 * max(1, max|soft|)`` on every input, with both models
run in float64 (precision.py says why), and every listed layer's kept outputs within 1e-8 of that
layer's own magnitude on the first input. Each model runs all inputs once, alone in float64 (one
model widened at a time keeps the peak memory at one float64 copy), recording on the first input
every listed layer and the multiply-accumulates the report needs. When the two disagree, forward
hooks find the first listed layer whose kept outputs differ, so the error names where the spec or
the surgery went wrong.

On another device (``--device cuda``, ``mps``) the proof runs there with the same bound. Both models
still run in float64, which TF32 never touches (it is switched off for the proof anyway, for a
model's own float32 paths); the GPU's float64 sums are taken in another order than the CPU's, a
few ulps (~1e-15 relative) apart, six orders of magnitude inside 1e-9. MPS has no float64, and a
float32 proof would not be one (precision.py): with ``--device mps`` the proof runs on the CPU.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn as nn

from ..cut.plan import ModuleCut
from ..errors import VerificationError
from ..layers import kinds as L
from ..layers.attention import unfused_attention
from ..measure.size import mac_counter, macs_of
from ..models.device import exact_float32, is_cpu, on_device, to_device
from ..models.forward import run
from .compare import Comparison, compare
from .precision import PROOF_TOLERANCE, float64_proof, proof_inputs

# Per-layer checks compare each layer relative to its own magnitude: accumulation over a narrower
# layer differs from the wide one by a few ulps of the summands, so allow 10x the output's bound.
LAYER_TOLERANCE_FACTOR = 10


@dataclass
class _Runs:
    """One model's outputs on every input, its listed layers and MACs on the first."""

    outputs: list[list[torch.Tensor]] = field(default_factory=list)
    layers: dict[str, torch.Tensor] = field(default_factory=dict)
    macs: int | None = None
    failure: VerificationError | None = None  # the first input it failed on ends the record


def run_and_count(model: nn.Module, x: torch.Tensor, what: str) -> tuple[list[torch.Tensor], int]:
    """``run`` and the multiply-accumulates it took, counted as ``measure.size.count_macs`` counts them."""
    with mac_counter() as counter:
        outputs = run(model, x, what)
    return outputs, macs_of(counter)


def _record(model: nn.Module, inputs: list[torch.Tensor], layer_order: list[str], what: str,
            device: torch.device | None = None) -> _Runs:
    """One model's runs; on ``device`` (the model moved there for the block and back, the inputs
    sent one at a time, every output and tap brought back to the CPU), in float64 either way."""
    runs = _Runs()
    device = proof_device(device)
    moved = not is_cpu(device)
    with on_device(model, device) if moved else nullcontext(), exact_float32(device), float64_proof(model):
        for index, x in enumerate(inputs):
            x = to_device(x, device) if moved else x
            try:
                if index == 0:
                    with _taps(model, layer_order) as runs.layers:
                        outputs, runs.macs = run_and_count(model, x, what)
                    if moved:
                        runs.layers = {name: tensor.cpu() for name, tensor in runs.layers.items()}
                else:
                    outputs = run(model, x, what)
            except VerificationError as exc:
                runs.failure = exc
                break
            runs.outputs.append([output.cpu() for output in outputs] if moved else outputs)
    return runs


def proof_device(device: torch.device | None) -> torch.device | None:
    """Where the float64 proof runs when asked for ``device``: there, but MPS (no float64) -> the CPU."""
    return None if device is None or torch.device(device).type == "mps" else torch.device(device)


def soft_vs_hard(soft: nn.Module, hard: nn.Module, inputs: list[torch.Tensor], plan: dict[str, ModuleCut],
                 layer_order: list[str], device: torch.device | None = None) -> Comparison:
    """Worst comparison over all inputs (float64); raises VerificationError naming the first bad layer.

    Besides the model output, every listed layer's kept outputs are compared on the first input
    relative to that layer's own magnitude: with random weights a deep network's output can vanish
    (1e-20), and ``max(1, ...)`` would then pass anything.

    ``device`` (``--device``): both models run there, one after the other, with TF32 off; the
    bound is the same 1e-9 (module docstring). The search for the first diverging layer, on a
    failure, runs on the CPU.
    """
    wide = proof_inputs(inputs)
    soft_runs = _record(soft, wide, layer_order, "soft-pruned model", device)
    if soft_runs.failure is not None:
        raise soft_runs.failure  # the masked original itself cannot run: not a question of pruning
    hard_runs = _record(hard, wide, layer_order, "hard-pruned model", device)
    worst = Comparison(0.0, 0.0, PROOF_TOLERANCE, precision="float64")
    modules = dict(soft.named_modules())
    for index, x in enumerate(wide):
        if index >= len(hard_runs.outputs):
            layer = first_divergence(soft, hard, x, plan, layer_order, PROOF_TOLERANCE)
            raise VerificationError(f"{hard_runs.failure}; first diverging layer: {_where(layer)}")
        try:
            result = compare(soft_runs.outputs[index], hard_runs.outputs[index], PROOF_TOLERANCE, "soft vs hard")
        except VerificationError as exc:
            raise VerificationError(f"{exc}; first diverging layer: "
                                    f"{_where(first_divergence(soft, hard, x, plan, layer_order, PROOF_TOLERANCE))}"
                                    ) from None
        if not result.ok:
            layer = first_divergence(soft, hard, x, plan, layer_order, PROOF_TOLERANCE)
            raise VerificationError(
                f"soft and hard models differ: max |soft - hard| = {result.max_abs:.3g} > "
                f"{PROOF_TOLERANCE:g} * max(1, {result.max_ref:.3g}) (float64); first diverging layer: {_where(layer)}")
        if index == 0:
            bound = LAYER_TOLERANCE_FACTOR * PROOF_TOLERANCE
            layer = _first_bad_layer(soft_runs.layers, hard_runs.layers, modules, plan, layer_order, bound,
                                     own_scale=True)
            if layer is not None:
                raise VerificationError(f"soft and hard models differ at layer {layer}: its kept outputs differ by "
                                        f"more than {bound:g} of their magnitude (float64)")
        if result.max_abs / max(1.0, result.max_ref) >= worst.max_abs / max(1.0, worst.max_ref):
            worst = result
    return Comparison(worst.max_abs, worst.max_ref, PROOF_TOLERANCE, hard_macs=hard_runs.macs,
                      soft_macs=soft_runs.macs, precision="float64")


def _where(layer: str | None) -> str:
    return layer if layer is not None else "none of the listed layers (the difference arises after the last one)"


@torch.no_grad()
def first_divergence(soft: nn.Module, hard: nn.Module, x: torch.Tensor, plan: dict[str, ModuleCut],
                     layer_order: list[str], tolerance: float, own_scale: bool = False) -> str | None:
    """The first listed layer (forward order) whose kept outputs differ between the models, both
    run in float64 on ``x``.

    ``own_scale``: tolerance relative to the layer's own max |output| instead of max(1, ...)."""
    captured: dict[str, dict[str, torch.Tensor]] = {}
    for tag, model in (("soft", soft), ("hard", hard)):
        with float64_proof(model), _taps(model, layer_order) as captured[tag], unfused_attention():
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
