"""Helpers shared by the data-driven criteria: where to observe a layer, channel layout."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..errors import SpecError
from ..layers.kinds import kind_of
from .base import Consumer, LayerView


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
    if kind_of(producer) == "linear" or isinstance(producer, nn.Embedding):  # channels last (Conv1D too)
        return output.reshape(-1, output.shape[-1]).transpose(0, 1)
    return output.transpose(0, 1).reshape(output.shape[1], -1)


def per_example_channel_means(values: torch.Tensor, producer: nn.Module) -> torch.Tensor:
    """``[batch, channels]``: each example's mean over its positions (spatial or sequence)."""
    if kind_of(producer) == "linear" or isinstance(producer, nn.Embedding):  # channels last
        return values.reshape(values.shape[0], -1, values.shape[-1]).mean(dim=1)
    return values.reshape(values.shape[0], values.shape[1], -1).mean(dim=2)


def input_features(x: torch.Tensor, reader: nn.Module) -> torch.Tensor:
    """``[positions, inputs]`` in float64: a reader's input, its input features last (a conv reads
    channels at dim 1; Linear, attention and embeddings read them last)."""
    if isinstance(reader, nn.modules.conv._ConvNd) and x.dim() > 2:
        return x.detach().movedim(1, -1).reshape(-1, x.shape[1]).double()
    return x.detach().reshape(-1, x.shape[-1]).double()


@torch.no_grad()
def observe_readers(model: nn.Module, layers: list[LayerView], data,
                    statistic: Callable[[Consumer, torch.Tensor], torch.Tensor]
                    ) -> tuple[dict[tuple[str, int], torch.Tensor], dict[tuple[str, int], int]]:
    """One pass over the data with a forward pre-hook on every reader of ``layers``: per reader
    (keyed by name and offset, as a module reading a concatenation reads several layers) the sum
    over batches of ``statistic(consumer, input_features)``, and how many positions it saw. Only
    these sums are kept, never the activations."""
    consumers = {(c.name, c.offset): c for view in layers for c in view.consumers}
    sums: dict[tuple[str, int], torch.Tensor] = {}
    positions: dict[tuple[str, int], int] = {}
    hooked: dict[str, list[Consumer]] = {}
    for consumer in consumers.values():
        hooked.setdefault(consumer.name, []).append(consumer)
    handles = []
    for readers in hooked.values():
        def record(module: nn.Module, args: tuple, kwargs: dict, readers=readers) -> None:
            x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
            if not isinstance(x, torch.Tensor):
                return
            features = input_features(x, module)
            for consumer in readers:
                key = (consumer.name, consumer.offset)
                sums[key] = sums.get(key, 0) + statistic(consumer, features)
                positions[key] = positions.get(key, 0) + features.shape[0]
        handles.append(readers[0].module.register_forward_pre_hook(record, with_kwargs=True))
    forward_over(model, data, handles)
    return sums, positions


def score_from_readers(criterion: str, layer: LayerView, observed: dict[tuple[str, int], torch.Tensor],
                       value: Callable[[Consumer, torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
    """One score per output row of ``layer``: ``value(reader, what was observed at it)`` summed over its
    readers (None: no listed layer reads it). A channel spanning several rows (a KV group's query
    heads) shares its score out over them."""
    if not layer.consumers:
        return None
    total = 0
    for consumer in layer.consumers:
        key = (consumer.name, consumer.offset)
        if key not in observed:
            raise SpecError(f"criterion {criterion!r}: layer {consumer.name!r} (reading {layer.name!r}) got no "
                            "input on the data; is it used in forward()?")
        total = total + value(consumer, observed[key])
    multiplier = layer.out_channels // total.numel()
    return total.repeat_interleave(multiplier) / multiplier
