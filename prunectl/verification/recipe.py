"""The bundle's rebuild recipe: constructor args (CAC's ``n_args_channels``) plus ``resize``.

Widths that are constructor arguments go into ``args``; whatever the rebuilt model still
gets wrong is recorded as module surgery in ``resize``. The recipe is proven on every run:
the model is rebuilt exactly as ``prunectl.load`` will, loaded strictly with the pruned
weights, and compared with the hard-pruned model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError, SpecError, VerificationError
from ..formats.spec import ModelRef, Spec
from ..layers import kinds as L
from ..layers.params import count_attributes, resize_of
from ..layers.resize import apply_resize
from ..loading.materialize import build_with_weights
from ..loading.meta import meta_model
from ..models.factory import accepts_argument
from ..models.factory import build as build_model
from ..models.forward import run
from ..models.submodule import entry
from .arg_probe import probed_args
from .compare import compare
from .precision import PROOF_TOLERANCE, float64_proof, proof_inputs


def constructor_args(spec: Spec, model_ref: ModelRef, hard: nn.Module) -> dict[str, Any]:
    """The original args with every listed layer's ``arg`` set to its pruned width."""
    modules = dict(hard.named_modules())
    widths: dict[str, tuple[int, str]] = {}
    for layer in spec.layers:
        if not layer.arg:
            continue
        width = L.out_width(modules[layer.name])
        if layer.arg in widths and widths[layer.arg][0] != width:
            other = widths[layer.arg][1]
            raise SpecError(f"{spec.source}: layers.{layer.name}.arg: {layer.arg!r} would be {width} here but "
                            f"{widths[layer.arg][0]} for {other!r}; layers sharing an arg must be coupled "
                            "(list them in one 'prev' sum)")
        widths[layer.arg] = (width, layer.name)
        if accepts_argument(model_ref.factory, layer.arg) is False:
            raise SpecError(f"{spec.source}: layers.{layer.name}.arg: {model_ref.factory} has no constructor "
                            f"argument {layer.arg!r}")
    return {**model_ref.args, **{arg: width for arg, (width, _) in widths.items()}}


def resize_needed(rebuilt: nn.Module, hard: nn.Module) -> dict[str, dict[str, int]]:
    """Shape attributes where the freshly built model differs from the pruned one."""
    built = dict(rebuilt.named_modules())
    resize = {}
    for name, module in hard.named_modules():
        if L.kind_of(module) == "other":
            continue
        # isinstance: a pruned attention may carry prunectl's subclass (layers/attention.py)
        if name not in built or not isinstance(module, type(built[name])):
            raise SpecError(f"rebuilt model has no {type(module).__name__} named {name!r}; "
                            "the factory args change the architecture, not just widths")
        target = L.shape_attrs(module)
        if L.shape_attrs(built[name]) != target:
            resize[name] = target
    # int attributes holding a channel count (ViT's hidden_dim)
    for name, module in hard.named_modules():
        if L.kind_of(module) == "other" and name in built:
            changed = {key: value for key, value in count_attributes(module).items()
                       if count_attributes(built[name]).get(key) != value}
            if changed:
                resize[name] = changed
    # parameters of other modules cut along a channel axis (layer scale, position embedding)
    owners = dict(hard.named_modules())
    built_parameters = dict(rebuilt.named_parameters())
    for name, parameter in hard.named_parameters():
        if L.kind_of(owners[name.rpartition(".")[0]]) != "other" or name not in built_parameters:
            continue  # a layer's own tensors follow its shape attributes; a missing one fails the strict load
        if built_parameters[name].shape != parameter.shape:
            resize[name] = resize_of(built_parameters[name], parameter)
    return resize


@dataclass(frozen=True)
class Recipe:
    """How ``prunectl.load`` rebuilds the pruned model, and that model as it rebuilds it."""

    args: dict[str, Any]
    resize: dict[str, dict[str, int]]
    model: nn.Module


def make_recipe(spec: Spec, model_ref: ModelRef, hard: nn.Module, copy_weights: bool = True) -> Recipe:
    """Args and resize for ``hard``, and the model rebuilt from them exactly as ``prunectl.load``
    does (strict load). Not yet proven to compute what ``hard`` does: see ``check_rebuild``.
    ``copy_weights=False``: the rebuilt model takes ``hard``'s tensors, for a caller that drops
    ``hard`` (or only reads it) afterwards."""
    args = constructor_args(spec, model_ref, hard)
    skeleton = meta_model(model_ref.factory, args, real_buffers=True)
    if skeleton is not None:  # the args no spec layer names must not keep widths this run changed
        fresh = probed_args(model_ref.factory, args, skeleton, hard, {layer.arg for layer in spec.layers if layer.arg})
        if fresh != args:
            args, skeleton = fresh, meta_model(model_ref.factory, fresh, real_buffers=True)
    probe = skeleton if skeleton is not None else build_model(model_ref.factory, args)
    resize = resize_needed(probe, hard)

    def build() -> nn.Module:
        model = probe if skeleton is None else build_model(model_ref.factory, args)
        apply_resize(model, resize)
        return model

    # copies: the bundle's model must not share memory with the hard model callers may go on training
    weights = {key: value.clone() if copy_weights else value for key, value in hard.state_dict().items()}
    try:
        rebuilt = build_with_weights(skeleton, weights, "pruned weights", build, resize)
    except CheckpointError as exc:
        raise SpecError(f"{spec.source}: rebuilding {model_ref.factory} from the pruned widths failed ({exc}); "
                        "check each layer's 'arg'") from None
    return Recipe(args, resize, rebuilt.eval())


def rebuild_mismatch(recipe: Recipe, factory: str, hard: nn.Module, x: torch.Tensor,
                     module: str | None = None) -> VerificationError | None:
    """The error to raise when the rebuilt model does not compute what ``hard`` does on ``x``
    (None when it does, or when ``hard`` itself cannot run: then the recipe is not to blame).
    ``module``: the submodule the spec input goes to."""
    try:
        expected = _run_float64(entry(hard, module), x, "hard-pruned model")
    except VerificationError:
        return None
    try:
        _check(recipe, factory, expected, x, module)
    except VerificationError as exc:
        return exc
    return None


def prove_recipe(spec: Spec, model_ref: ModelRef, hard: nn.Module, x: torch.Tensor) -> Recipe:
    """The recipe whose rebuild reproduces ``hard``, proven on ``x`` (both run in float64)."""
    recipe = make_recipe(spec, model_ref, hard)
    _check(recipe, model_ref.factory, _run_float64(hard, x, "hard-pruned model"), x)
    return recipe


def _run_float64(model: nn.Module, x: torch.Tensor, what: str) -> list[torch.Tensor]:
    with float64_proof(model):
        return run(model, proof_inputs([x])[0], what)


def _check(recipe: Recipe, factory: str, expected: list[torch.Tensor], x: torch.Tensor,
           module: str | None = None) -> None:
    result = compare(expected, _run_float64(entry(recipe.model, module), x, "rebuilt model"), PROOF_TOLERANCE,
                     "rebuilt vs hard")
    if not result.ok:
        raise VerificationError(f"the model rebuilt from {factory}(**args) computes something else than the "
                                f"pruned model (max diff {result.max_abs:.3g}); check each layer's 'arg'")
