"""FLAP's bias compensation (An et al., AAAI 2024): a removed input's mean contribution goes into
its reader's bias.

A Linear (or conv) reading cut channels loses ``W[:, removed] @ x[removed]`` from its output. Over
the calibration data that term has a mean; adding it to the reader's bias keeps the reader's
output right on average (FLAP's "baseline bias"). It is done on the *original* model, before
anything is masked, so the soft model (masked inputs + the new bias) and the hard model (cut
columns + the same bias) are the same function and the soft == hard proof holds unchanged.

The means are taken in one pass over the data with a forward pre-hook per reader
(``criteria.observe.observe_readers``): one running float64 sum per reader, never the
activations. All readers are observed before any bias moves, so every mean is the original
model's (a compensated down_proj would otherwise shift what the next layer's readers see).

A reader without a bias gets one only where the factory's own arguments can build it with one
(``bias_flags``: a config flag such as Llama's ``mlp_bias``, which also gives gate/up biases,
written as zeros), or, when its output goes straight into a BatchNorm (a VGG/ResNet conv), the
shift goes into that norm's running mean; else it is left uncompensated with a warning and a
report entry (docs/decisions.md, "Bias compensation"). Channels normalised by a norm whose statistic spans
them (an LLM's hidden width: RMSNorm; a ViT's: LayerNorm) get none: the masked norm rescales the
kept channels, so their removed inputs' mean is not what the cut takes away.
"""
from __future__ import annotations

import inspect
import warnings
import weakref
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup
from ..criteria.base import Consumer, LayerView
from ..criteria.observe import observe_readers
from ..cut.plan import expand
from ..errors import SpecError
from ..formats.spec import ModelRef
from ..layers import kinds as L
from ..loading.data import CalibrationData
from ..loading.meta import meta_model
from ..models.device import is_cpu, on_device
from ..models.factory import resolve
from .scoring import data_on


@dataclass(frozen=True)
class Compensation:
    """What compensating changed besides the biases: the model's factory and args, with the flags
    that build the new biases (``"mlp_bias": True``), and report.json's ``bias_compensation``."""

    model_ref: ModelRef | None
    report: dict[str, Any]


def removed_inputs(groups: list[ChannelGroup], kept: list[torch.Tensor | None], model: nn.Module
                   ) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, str]]:
    """Per reader of a cut channel (a Linear or conv taking the channels as input): the input
    indices the cut removes, ascending; the readers left by design (behind a norm), and those
    that cannot be compensated (a grouped conv, another kind), each with why."""
    modules = dict(model.named_modules())
    removed: dict[str, list[torch.Tensor]] = {}
    normalised: dict[str, str] = {}
    refused: dict[str, str] = {}
    for group, indices in zip(groups, kept):
        if indices is None or len(indices) == group.size:
            continue
        dropped = _complement(group.size, indices)
        norm = next((m.module for m in group.members if m.side == "out" and m.axis is None and not m.count
                     and L.statistic(modules[m.module]) is not None), None)
        for member in group.members:
            if member.side != "in" or member.axis is not None or member.count:
                continue
            reader = modules[member.module]
            why = _not_compensable(reader, norm, modules)
            if why == "":
                continue  # a depthwise conv: its removed inputs feed only removed outputs
            if why is not None:
                (normalised if norm is not None else refused).setdefault(member.module, why)
                continue
            removed.setdefault(member.module, []).append(member.offset + expand(dropped, member.factor))
    left = {**normalised, **refused}
    return ({name: torch.cat(parts).sort().values for name, parts in removed.items() if name not in left},
            normalised, refused)


def _complement(size: int, kept: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[kept] = False
    return mask.nonzero().flatten()


def _not_compensable(reader: nn.Module, norm: str | None, modules: dict[str, nn.Module]) -> str | None:
    """Why ``reader`` gets no compensation (None: it can; "": it needs none)."""
    if norm is not None:
        return (f"reads channels normalised by {norm!r} ({type(modules[norm]).__name__}, a statistic over the "
                "channels): the cut rescales the kept ones, so no constant makes up for it")
    if L.linear_form(reader) is not None:
        return None
    if isinstance(reader, nn.modules.conv._ConvNd) and not reader.transposed:
        if L.is_depthwise(reader):
            return ""
        return None if reader.groups == 1 else "a grouped conv (only plain convs and Linear layers are compensated)"
    return f"a {type(reader).__name__} (only Linear layers and plain convs are compensated)"


def bias_flags(model_ref: ModelRef | None, model: nn.Module) -> dict[str, frozenset[str]]:
    """Boolean factory arguments named ``*bias*`` that are off, and the modules each one, turned on,
    gives a bias (Llama's ``mlp_bias``: gate/up/down_proj of every layer). A flag counts only when
    the build with it differs from the build without it by exactly those bias vectors, so that
    ``prunectl.load`` and stock ``from_pretrained`` build the compensated model from the args."""
    if model_ref is None:
        return {}
    candidates = {key for key, value in model_ref.args.items() if value is False and "bias" in key.lower()}
    candidates |= _false_bias_defaults(model_ref)
    config = getattr(model, "config", None)
    if hasattr(config, "to_dict"):  # transformers: args may be part of a config, the rest its defaults
        candidates |= {key for key, value in config.to_dict().items() if value is False and "bias" in key.lower()}
    if not candidates:
        return {}
    base = meta_model(model_ref.factory, model_ref.args)
    if base is None:
        return {}
    own = dict(model.named_modules())
    base_params = {name: p.shape for name, p in base.named_parameters()}
    flags = {}
    for flag in sorted(candidates):
        built = meta_model(model_ref.factory, {**model_ref.args, flag: True})
        if built is None:
            continue
        params = {name: p.shape for name, p in built.named_parameters()}
        gained = set(params) - set(base_params)
        owners = {name.rpartition(".")[0] for name in gained}
        if (not gained or set(base_params) - set(params)
                or any(params[name] != shape for name, shape in base_params.items())
                or any(not name.endswith(".bias") for name in gained)
                or any(owner not in own or L.linear_form(own[owner]) is None or own[owner].bias is not None
                       for owner in owners)):
            continue
        flags[flag] = frozenset(owners)
    return flags


def _false_bias_defaults(model_ref: ModelRef) -> set[str]:
    """A ``pkg.module:Class`` factory's keyword arguments named ``*bias*`` that default to False and
    are not given (a registered provider's arguments are all in ``args``: a whole config)."""
    try:
        parameters = inspect.signature(resolve(model_ref.factory)).parameters.values()
    except (SpecError, TypeError, ValueError):
        return set()
    return {p.name for p in parameters if p.default is False and "bias" in p.name.lower()
            and p.name not in model_ref.args}


@torch.no_grad()
def compensate_biases(model: nn.Module, groups: list[ChannelGroup], kept: list[torch.Tensor | None],
                      data: CalibrationData, model_ref: ModelRef | None,
                      device: torch.device | None = None) -> Compensation:
    """Add every cut input's mean contribution to its reader's bias, in ``model`` (the original,
    before masking); the args and report entry that go with it."""
    removed, by_design, refused = removed_inputs(groups, kept, model)
    modules = dict(model.named_modules())
    flags = bias_flags(model_ref, model) if any(modules[n].bias is None for n in removed) else {}
    chosen: dict[str, frozenset[str]] = {}
    into_norm: dict[str, str] = {}  # a bias-free reader whose output goes straight into a BatchNorm
    for name in sorted(removed):
        if modules[name].bias is not None or any(name in owners for owners in chosen.values()):
            continue
        flag = next((flag for flag, owners in flags.items() if name in owners), None)
        norm = _batch_norm_after(name, groups, modules) if flag is None else None
        if flag is not None:
            chosen[flag] = flags[flag]
        elif norm is not None:
            into_norm[name] = norm
        else:
            refused[name] = (f"has no bias, and no argument of {model_ref.factory if model_ref else 'its factory'} "
                             "builds it with one")
    removed = {name: index for name, index in removed.items() if name not in refused}
    means, positions, straight = _input_means(model, removed, data, device, into_norm)
    for name, norm in into_norm.items():
        if not straight.get(name):
            refused[name] = (f"has no bias, no argument builds it with one, and {norm!r} after it does not take its "
                             "output as it is")
            del removed[name]
    for owners in chosen.values():  # the biases the flag builds: zeros, then the compensated ones below
        for owner in sorted(owners):
            weight = L.weight_of(modules[owner])
            width = L.out_width(modules[owner])
            modules[owner].bias = nn.Parameter(torch.zeros(width, dtype=weight.dtype, device=weight.device))
    config = getattr(model, "config", None)
    for flag in chosen:  # the live config says what the model now has (save_pretrained, a deepcopy)
        if config is not None and hasattr(config, flag):
            setattr(config, flag, True)
    compensated = []
    for name, index in sorted(removed.items()):
        shift = _lost_contribution(modules[name], index, means[name])
        if name in into_norm:  # eval-mode BN(y + s) with running mean m is BN(y) with running mean m - s
            target, into = modules[into_norm[name]].running_mean, f"{into_norm[name]}.running_mean"
            shift = -shift
        else:
            target, into = modules[name].bias, f"{name}.bias"
        target.add_(shift.to(dtype=target.dtype, device=target.device))
        compensated.append({"layer": name, "into": into, "inputs_removed": len(index), "positions": positions[name],
                            "max_abs_shift": float(shift.abs().max())})
    if refused:  # the hidden width's readers are left by design; these could not be compensated: say so
        first = sorted(refused)[0]
        warnings.warn(f"--bias-compensation: {len(refused)} reader(s) left uncompensated, e.g. {first!r}: "
                      f"{refused[first]}", stacklevel=3)  # past torch.no_grad's wrapper: the caller
    left = {**by_design, **refused}
    flagged = {flag: True for flag in chosen}
    report = {"readers": compensated,
              "uncompensated": [{"layer": name, "reason": left[name]} for name in sorted(left)],
              **({"args": flagged} if flagged else {})}
    return Compensation(replace(model_ref, args={**model_ref.args, **flagged}) if flagged else model_ref, report)


def _batch_norm_after(name: str, groups: list[ChannelGroup], modules: dict[str, nn.Module]) -> str | None:
    """The BatchNorm (with running statistics) the spec lists right after ``name``'s outputs, as
    wide as they are: the shift a bias would take can go into its running mean instead."""
    for group in groups:
        for position, member in enumerate(group.members[:-1]):
            after = group.members[position + 1]
            norm = modules.get(after.module)
            if (member.module == name and member.side == "out" and after.side == "out" and member.offset == 0
                    and after.offset == 0 and isinstance(norm, nn.modules.batchnorm._BatchNorm)
                    and norm.running_mean is not None and norm.num_features == L.out_width(modules[name])):
                return after.module
    return None


def _input_means(model: nn.Module, readers: dict[str, torch.Tensor], data: CalibrationData,
                 device: torch.device | None, into_norm: dict[str, str]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, int], dict[str, bool]]:
    """Each reader's signed mean input per input feature over every position of the data, float64;
    how many positions (tokens, pixels) each mean is over; and, for each reader of ``into_norm``,
    whether its BatchNorm took the reader's very output tensor every time (not a sum with another
    branch, not the output of an activation between them: only then is the shift exact)."""
    if not readers:
        return {}, {}, {}
    modules = dict(model.named_modules())
    views = [LayerView(name, modules[name], consumers=(Consumer(name, modules[name]),)) for name in sorted(readers)]
    straight: dict[str, bool] = {}
    handles = []
    for name, norm in into_norm.items():
        last: dict[str, weakref.ref] = {}  # a weak reference: no activation is kept alive by it

        def remember(module: nn.Module, args: tuple, output: Any, last=last) -> None:
            if isinstance(output, torch.Tensor):
                last["output"] = weakref.ref(output)

        def compare(module: nn.Module, args: tuple, last=last, name=name) -> None:
            seen = last.pop("output", None)
            straight[name] = straight.get(name, True) and seen is not None and bool(args) and seen() is args[0]
        handles += [modules[name].register_forward_hook(remember), modules[norm].register_forward_pre_hook(compare)]
    moved = not is_cpu(device)
    try:
        with on_device(model, device) if moved else nullcontext():
            sums, positions = observe_readers(model, views, data_on(data, device) if moved else data,
                                              lambda consumer, features: features.sum(0))
    finally:
        for handle in handles:
            handle.remove()
    means, counts = {}, {}
    for name in readers:
        if (name, 0) not in sums:
            raise SpecError(f"--bias-compensation: layer {name!r} got no input on the data; is it used in forward()?")
        means[name] = sums[(name, 0)].cpu() / positions[(name, 0)]
        counts[name] = positions[(name, 0)]
    return means, counts, straight


def _lost_contribution(module: nn.Module, removed: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``W[:, removed] @ mean[removed]`` per output, float64: what the removed inputs add on
    average (a conv: its kernel summed, the contribution at a position away from the padding)."""
    weight = L.weight_of(module).detach().double().cpu()
    form = L.linear_form(module)
    columns = weight.index_select(form.in_axis if form is not None else 1, removed)
    if form is not None and form.in_axis == 0:
        columns = columns.t()  # transformers' Conv1D: [in, out]
    columns = columns.flatten(2).sum(2) if columns.dim() > 2 else columns
    return columns @ mean[removed]
