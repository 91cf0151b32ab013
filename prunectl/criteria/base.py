"""The criterion interface: one score per output channel of one layer (higher = keep)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from .. import registry
from ..errors import SpecError


@dataclass(frozen=True)
class LayerView:
    """What a criterion may look at: a layer, its name, and its weights per output channel."""

    name: str
    module: nn.Module

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight.detach()

    def out_channel_weights(self) -> torch.Tensor:
        """Weights as ``[out_channels, fan_in]`` in float64 (ConvTranspose stores them transposed)."""
        weight = self.weight.double()
        if isinstance(self.module, nn.modules.conv._ConvTransposeNd):
            groups = self.module.groups
            in_per_group = weight.shape[0] // groups
            # [in, out/g, k...] -> [out, in/g, k...], group by group
            weight = torch.cat([weight[g * in_per_group:(g + 1) * in_per_group].transpose(0, 1)
                                for g in range(groups)], dim=0)
        return weight.flatten(1)


class Criterion:
    """Subclass, set ``name``/``description``/``needs_data``, implement ``score``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False

    def score(self, layer: LayerView) -> torch.Tensor:
        raise NotImplementedError


def get_criterion(name: str) -> Criterion:
    cls = registry.load(registry.CRITERIA, name)
    if not (isinstance(cls, type) and issubclass(cls, Criterion)):
        raise SpecError(f"criterion {name!r} is registered as {cls!r}, which is not a prunectl Criterion subclass")
    return cls()


def list_criteria() -> list[type[Criterion]]:
    return [registry.load(registry.CRITERIA, name) for name in registry.available(registry.CRITERIA)]
