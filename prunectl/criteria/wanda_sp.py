"""Structured Wanda (Wanda-sp: Sun et al., "A Simple and Effective Pruning Approach for Large
Language Models", 2023, in the structured form An et al. compare against in FLAP, 2024)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import SpecError
from .base import Consumer, Criterion, LayerView
from .observe import observe_readers, score_from_readers


class WandaSP(Criterion):
    """Score = sum over the channel's input columns in every reader of ``|W_ij| * ||X_j||_2``.

    Wanda scores a weight by its magnitude times the L2 norm of the input feature it multiplies,
    over the calibration tokens; the structured variant sums that over every weight that reads an
    input channel, so a channel whose inputs are large and whose weights are large is kept. Here
    ``j`` runs over the channel's inputs of each reader (``factor`` of them: a head's head_dim, a
    flattened feature map's positions) and the readers are summed. A conv reader's ``||X_c||`` is
    over every position of channel c, the norm each kernel tap sees up to padding. Streamed:
    only the per-input sums of squares are kept.
    """

    name = "wanda_sp"
    description = "|W| x ||X||_2 of each channel's input columns in its readers (structured Wanda)"
    needs_data = True
    unscored_reason = "no listed layer reads its outputs, and its readers' weights and inputs are what 'wanda_sp' uses"

    def __init__(self) -> None:
        self._squares: dict[tuple[str, int], torch.Tensor] = {}

    def prepare(self, model: nn.Module, layers: list[LayerView], data) -> None:
        self._squares, _ = observe_readers(model, layers, data, _input_squares)

    def score(self, layer: LayerView) -> torch.Tensor | None:
        return score_from_readers(self.name, layer, self._squares, self._reader_score)

    def _reader_score(self, consumer: Consumer, squares: torch.Tensor) -> torch.Tensor:
        columns = consumer.power_per_input(1)
        if columns.shape != squares.shape:
            raise SpecError(f"criterion 'wanda_sp': layer {consumer.name!r} has {columns.numel()} weight columns "
                            f"for {squares.numel()} inputs")
        return consumer.per_channel(columns * squares.sqrt())


def _input_squares(_consumer: Consumer, features: torch.Tensor) -> torch.Tensor:
    return features.pow(2).sum(0)
