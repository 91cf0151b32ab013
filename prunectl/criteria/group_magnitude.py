"""Group magnitude: a channel's weights in every layer it touches (Torch-Pruning's default).

``l1`` and ``l2`` score only the filter that produces a channel. Removing the channel also
deletes its scale and shift in the following norm and its input columns in every layer that
reads it; a neuron whose outgoing weights are tiny matters little however large its filter.
Torch-Pruning's ``MagnitudeImportance(p, group_reduction="sum")`` sums all of them, and on the
digits MLP that is what beat every producer-only criterion (docs/results/bench/accuracy_vs_size.json).

As in Torch-Pruning, a channel's score is one sum over its whole group: every layer producing it
(a residual sum has several; attention heads are q, k and v), the norm after each, and the
readers' input columns once. Each producing layer returns its own part (the readers' columns
with the first one) and selection adds the parts (``scores_are_parts``), so the kept channels and
heads are Torch-Pruning's. p = 2 is the sum of squares, as Torch-Pruning computes it (the same
ranking as its root).
"""
from __future__ import annotations

from typing import ClassVar

import torch

from .base import Criterion, LayerView


class _GroupMagnitude(Criterion):
    p: ClassVar[int] = 1
    scores_are_parts = True

    def score(self, layer: LayerView) -> torch.Tensor:
        power = layer.out_channel_weights().abs().pow(self.p).sum(dim=1)
        norm_weight = getattr(layer.next_norm, "weight", None)
        if norm_weight is not None:
            power = power + norm_weight.detach().double().abs().pow(self.p).repeat_interleave(
                power.numel() // norm_weight.numel())
        for consumer in layer.consumers if layer.first_in_group else ():
            columns = consumer.input_column_power(self.p)
            # a depthwise multiplier makes `factor` filters per read channel: they share its columns
            factor = power.numel() // columns.numel()
            power = power + columns.repeat_interleave(factor) / factor
        return power


class GroupL1(_GroupMagnitude):
    name = "group_l1"
    description = "L1 of the channel's filter, norm scale and readers' input columns (Torch-Pruning's group magnitude)"
    p = 1


class GroupL2(_GroupMagnitude):
    name = "group_l2"
    description = "squared L2 of the channel's filter, norm scale and readers' input columns (Torch-Pruning's p=2)"
    p = 2
