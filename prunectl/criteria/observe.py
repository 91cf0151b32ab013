"""Helpers shared by the data-driven criteria: where to observe a layer, channel layout."""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import LayerView


@torch.no_grad()
def forward_over(model: nn.Module, data, handles: list) -> None:
    """Run every calibration batch through ``model``, then remove the hooks in ``handles``
    (whatever happened): the one pass the hook-based criteria need."""
    try:
        for inputs, _ in data.batches:
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()


def observed_module(view: LayerView) -> nn.Module:
    """The layer's norm if the spec lists one right after it, else the layer itself."""
    return view.next_norm if view.next_norm is not None else view.module


def channels_first(output: torch.Tensor, producer: nn.Module) -> torch.Tensor:
    """``[channels, everything else]``: Linear and Embedding put channels last, convolutions at dim 1."""
    if isinstance(producer, (nn.Linear, nn.Embedding)):  # channels last
        return output.reshape(-1, output.shape[-1]).transpose(0, 1)
    return output.transpose(0, 1).reshape(output.shape[1], -1)


def per_example_channel_means(values: torch.Tensor, producer: nn.Module) -> torch.Tensor:
    """``[batch, channels]``: each example's mean over its positions (spatial or sequence)."""
    if isinstance(producer, (nn.Linear, nn.Embedding)):  # channels last
        return values.reshape(values.shape[0], -1, values.shape[-1]).mean(dim=1)
    return values.reshape(values.shape[0], values.shape[1], -1).mean(dim=2)
