"""The criterion interface: one score per output channel of one layer (higher = keep).

A criterion sees a :class:`LayerView` per scored layer. Data-free criteria only need
``score``; data-driven ones (``needs_data = True``) also get one ``prepare`` call with the
model, every layer they will be asked about, and the calibration data, so they can run the
data once with hooks and answer ``score`` from what they collected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn

from .. import registry
from ..errors import SpecError
from ..layers.kinds import in_dim, linear_form, weight_of
from ..seeding import named_generator

if TYPE_CHECKING:
    from ..loading.data import CalibrationData


@dataclass(frozen=True)
class Consumer:
    """A module that reads a layer's output channels; each channel spans ``factor`` inputs.

    When the module reads a concatenation, this layer's ``channels`` start at input index
    ``offset`` (``channels`` None: the whole input dimension)."""

    name: str
    module: nn.Module
    factor: int = 1
    offset: int = 0
    channels: int | None = None

    def input_column_power(self, p: int) -> torch.Tensor:
        """Sum of ``|w|**p`` over the weights reading each of this layer's channels, in float64.

        One entry per channel: its ``factor`` input indices, every output row (of its conv
        group only, for a grouped conv) and every kernel position."""
        return self.per_channel(self.power_per_input(p))

    def power_per_input(self, p: int) -> torch.Tensor:
        """Sum of ``|w|**p`` over the weights reading each input index of the reader, in float64."""
        weight = weight_of(self.module).detach().double().abs().pow(p)
        if isinstance(self.module, nn.modules.conv._ConvTransposeNd):
            per_input = weight.flatten(1).sum(1)  # [in, out/g, k...]: inputs are dim 0
        elif weight.dim() > 2 or getattr(self.module, "groups", 1) > 1:  # conv [out, in/g, k...]
            groups = getattr(self.module, "groups", 1)
            per_group = weight.view(groups, weight.shape[0] // groups, weight.shape[1], -1)
            per_input = per_group.sum(dim=(1, 3)).flatten()  # input i = block * (in/g) + column
        else:  # linear [out, in] (transformers' Conv1D: [in, out])
            per_input = weight.sum(1 - in_dim(self.module))
        return per_input

    def per_channel(self, per_input: torch.Tensor) -> torch.Tensor:
        """Values indexed by the reader's input (last dim) summed into one per channel of this
        layer: its ``factor`` inputs each, starting at ``offset``."""
        channels = self.channels if self.channels is not None else per_input.shape[-1] // self.factor
        span = per_input[..., self.offset:self.offset + channels * self.factor]
        return span.reshape(*span.shape[:-1], channels, self.factor).sum(-1)


@dataclass(frozen=True)
class LayerView:
    """What a criterion may look at: a layer, its name, and its weights per output channel.

    ``next_norm`` is the norm layer the spec lists right after this one (same channels), if
    any; ``reached_norm`` the norm the layer's channels reach, possibly through depthwise convs
    (which pass channels through one for one: pointwise -> depthwise -> BatchNorm reaches the
    BatchNorm; it holds ``multiplier`` scales per channel of this layer); ``consumers`` are the
    modules whose inputs are this layer's channels (several for a residual sum); ``seed`` makes
    randomised criteria reproducible.
    """

    name: str
    module: nn.Module
    next_norm: nn.Module | None = None
    next_norm_name: str | None = None
    consumers: tuple[Consumer, ...] = ()
    seed: int = 0
    parts: int = 1  # the output rows are this many blocks of the same channels (a fused q/k/v: 3)
    # the first scored layer of its channel group: a criterion whose scores are parts of one group
    # score (``scores_are_parts``) counts what the whole group shares, its readers, here only
    first_in_group: bool = True
    reached_norm: nn.Module | None = None
    reached_norm_name: str | None = None

    @property
    def weight(self) -> torch.Tensor:
        return weight_of(self.module).detach()

    @property
    def out_channels(self) -> int:
        return self.out_channel_weights().shape[0]

    def out_channel_weights(self) -> torch.Tensor:
        """Weights as ``[out_channels, fan_in]`` in float64 (ConvTranspose stores them transposed)."""
        weight = self.weight.double()
        form = linear_form(self.module)
        if isinstance(self.module, nn.Embedding) or (form is not None and form.out_axis == 1):
            weight = weight.t()  # [num_embeddings, embedding_dim], Conv1D's [in, out]: channels are columns
        if self.parts > 1:  # [parts * C, ...]: channel j's filter is rows j, C + j, 2C + j, ... together
            weight = weight.reshape(self.parts, -1, *weight.shape[1:]).transpose(0, 1)
        if isinstance(self.module, nn.modules.conv._ConvTransposeNd):
            groups = self.module.groups
            in_per_group = weight.shape[0] // groups
            # [in, out/g, k...] -> [out, in/g, k...], group by group
            weight = torch.cat([weight[g * in_per_group:(g + 1) * in_per_group].transpose(0, 1)
                                for g in range(groups)], dim=0)
        return weight.flatten(1)

    def generator(self) -> torch.Generator:
        """A generator seeded by ``seed`` and the layer name: same inputs, same numbers."""
        return named_generator(self.seed, self.name)


class Criterion:
    """Subclass, set ``name``/``description``/``needs_data``, implement ``score``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    # True when scores are already comparable across layers (LAMP): selection skips its
    # divide-by-the-mean normalisation
    self_normalised: ClassVar[bool] = False
    # True when the scores of a group's layers are parts of one score of the group (Torch-Pruning's
    # group magnitude): selection adds them up and normalises the sum, instead of normalising each
    # layer's scores and combining them with --group-reduce
    scores_are_parts: ClassVar[bool] = False
    # why ``score`` returned None, for the report of a group it left unpruned
    unscored_reason: ClassVar[str] = "the criterion gives it no score"

    def prepare(self, model: nn.Module, layers: list[LayerView], data: CalibrationData | None) -> None:
        """Called once before ``score`` with every layer to be scored; collect statistics here."""

    def score(self, layer: LayerView) -> torch.Tensor | None:
        """One score per output channel; or ``None`` when the criterion has nothing to score this
        layer by (``bn_scale`` on a layer that reaches no norm): a group none of whose layers is
        scored keeps every channel, and the report names it with ``unscored_reason``."""
        raise NotImplementedError

    def score_entries(self, layer: LayerView, tensor: torch.Tensor) -> torch.Tensor:
        """Optional, for unstructured pruning: one score per entry of ``tensor`` (the layer's
        weight or bias), same shape, higher = keep. Criteria without it score channels only."""
        raise NotImplementedError

    @classmethod
    def scores_entries(cls) -> bool:
        """Whether the criterion implements ``score_entries`` (usable with ``--mode unstructured``)."""
        return cls.score_entries is not Criterion.score_entries


def get_criterion(name: str) -> Criterion:
    cls = registry.load(registry.CRITERIA, name)
    if not (isinstance(cls, type) and issubclass(cls, Criterion)):
        raise SpecError(f"criterion {name!r} is registered as {cls!r}, which is not a prunectl Criterion subclass")
    return cls()



def installed_criteria() -> list[dict[str, Any]]:
    """Installed criteria (built-in and plugins): name, one-line description, needs data, class."""
    rows = []
    for name in registry.available(registry.CRITERIA):
        cls = registry.load(registry.CRITERIA, name)
        if not (isinstance(cls, type) and issubclass(cls, Criterion)):
            raise SpecError(f"criterion {name!r} is registered as {cls!r}, which is not a prunectl Criterion subclass")
        rows.append({"name": name, "description": cls.description, "needs_data": bool(cls.needs_data),
                     "class": f"{cls.__module__}:{cls.__qualname__}"})
    return rows
