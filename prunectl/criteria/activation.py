"""Activation magnitude (Minitron: Muralidharan et al., "Compact Language Models via Pruning and
Knowledge Distillation", 2024)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Consumer, Criterion, LayerView
from .observe import observe_readers, score_from_readers


class Activation(Criterion):
    """Score = mean over the calibration positions of the channel's activation magnitude, as its
    readers receive it, summed over its readers.

    Minitron ranks MLP neurons, heads and embedding channels by the mean magnitude of their
    activations on about a thousand calibration samples, with no gradients. What a reader receives
    is the activation that matters: the MLP neuron's ``act(gate) * up`` (the input of down_proj),
    a head's attention output (o_proj's input; Minitron's ``||Attn(...)||_2``: the L2 norm over the
    head's ``head_dim`` values, over a KV group's query heads together), a hidden channel after
    each norm (the inputs of q/k/v, gate/up and lm_head; Minitron's ``LN(X)``). A channel one
    index wide gets mean |x|. Streamed through forward pre-hooks: only per-channel sums are kept.
    """

    name = "activation"
    description = "mean |activation| each channel's readers receive on the data (Minitron, 2024)"
    needs_data = True
    unscored_reason = "no listed layer reads its outputs, and its readers' inputs are what 'activation' observes"

    def __init__(self) -> None:
        self._sums: dict[tuple[str, int], torch.Tensor] = {}
        self._positions: dict[tuple[str, int], int] = {}

    def prepare(self, model: nn.Module, layers: list[LayerView], data) -> None:
        self._sums, self._positions = observe_readers(model, layers, data, _channel_norms)

    def score(self, layer: LayerView) -> torch.Tensor | None:
        return score_from_readers(self.name, layer, self._sums,
                                  lambda reader, sums: sums / self._positions[(reader.name, reader.offset)])


def _channel_norms(consumer: Consumer, features: torch.Tensor) -> torch.Tensor:
    """Per channel, the sum over positions of the L2 norm of its ``factor`` inputs."""
    channels = consumer.channels if consumer.channels is not None else features.shape[-1] // consumer.factor
    span = features[:, consumer.offset:consumer.offset + channels * consumer.factor]
    return span.reshape(-1, channels, consumer.factor).pow(2).sum(-1).sqrt().sum(0)
