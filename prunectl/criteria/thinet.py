"""ThiNet (Luo et al., ICCV 2017): keep the channels the next layer needs to reconstruct its output."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SpecError, UnsupportedError
from ..layers.kinds import kind_of, weight_of
from .base import Consumer, Criterion, LayerView
from .observe import forward_over

ROWS_PER_LAYER = 1024  # sampled (example, position, output channel) triples, as the paper samples
OUTPUTS_PER_BATCH = 8
EXAMPLES_PER_OUTPUT = 4  # positions are sampled from a few examples per output channel
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ThiNet(Criterion):
    """Score = the step at which greedy selection would remove the channel (later = keep).

    ThiNet looks at the *next* layer: at sampled output positions, each input channel c adds a
    contribution x_c to the output, and removing a set T of channels changes the output by
    ``sum_{c in T} x_c``. The paper's greedy algorithm grows T one channel at a time, always
    adding the channel that keeps ``sum_samples (sum_{c in T} x_c)^2`` smallest. The order is
    the same whatever the final rate, so the position in that order is the score. The next
    layers are the modules reading the layer's channels (all of them, for a residual sum);
    their real inputs (after norm, ReLU, pooling) come from forward pre-hooks on the data.
    The paper's least-squares rescaling of the remaining weights is not applied.
    """

    name = "thinet"
    description = "greedy next-layer reconstruction error, removal order (Luo et al. 2017)"
    needs_data = True

    def __init__(self) -> None:
        self._scores: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def prepare(self, model: nn.Module, layers: list[LayerView], data) -> None:
        for view in layers:
            if not view.consumers:
                raise SpecError(f"criterion 'thinet': layer {view.name!r} has no listed layer reading its "
                                "outputs; there is no next layer to reconstruct")
        # keyed by (module, offset): a module reading a concatenation consumes several layers
        consumers = {(c.name, c.offset): c for view in layers for c in view.consumers}
        rows: dict[tuple[str, int], list[torch.Tensor]] = {key: [] for key in consumers}
        per_batch = max(1, -(-ROWS_PER_LAYER // len(data.batches)))
        generator = torch.Generator().manual_seed(layers[0].seed if layers else 0)
        handles = []
        for consumer in consumers.values():
            def sample(_module, args, consumer=consumer) -> None:
                sampled = _contributions(consumer, args[0].detach().double(), per_batch, generator)
                # sampled where the model runs (--device), searched on the CPU: the greedy loop is sequential
                rows[(consumer.name, consumer.offset)].append(sampled.cpu())
            handles.append(consumer.module.register_forward_pre_hook(sample))
        forward_over(model, data, handles)
        for view in layers:
            contributions = torch.cat([torch.cat(rows[(c.name, c.offset)]) for c in view.consumers])
            order = greedy_removal_order(contributions)
            channel_scores = torch.empty(len(order), dtype=torch.float64)
            channel_scores[order] = torch.arange(1, len(order) + 1, dtype=torch.float64)
            # a depthwise multiplier: several outputs per channel share its score
            multiplier = view.out_channels // len(order)
            self._scores[view.name] = channel_scores.repeat_interleave(multiplier) / multiplier

    def score(self, layer: LayerView) -> torch.Tensor:
        if layer.name not in self._scores:
            raise SpecError(f"criterion 'thinet': layer {layer.name!r} was not prepared")
        return self._scores[layer.name]


def greedy_removal_order(contributions: torch.Tensor) -> torch.Tensor:
    """Channel indices in the order ThiNet's greedy search removes them.

    ``contributions`` is ``[samples, channels]``. With ``s`` the summed contribution of the
    channels removed so far, adding channel i costs ``||s + x_i||^2 = ||s||^2 + 2 s.x_i + ||x_i||^2``.
    """
    # The cross term only needs the Gram matrix G = X^T X: s.x_i = sum_{j removed} G[j, i].
    gram = contributions.transpose(0, 1) @ contributions
    channels = gram.shape[0]
    cross = torch.zeros(channels, dtype=gram.dtype)
    squared = gram.diagonal().clone()
    removed = torch.zeros(channels, dtype=torch.bool)
    order = []
    for _ in range(channels):
        cost = 2 * cross + squared
        cost[removed] = float("inf")
        index = int(torch.argmin(cost))  # first of equal minima: ties go to the lower index
        order.append(index)
        removed[index] = True
        cross += gram[index]
    return torch.tensor(order)


def _contributions(consumer: Consumer, x: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``[count, channels]``: per-channel contributions to sampled outputs of ``consumer``."""
    module = consumer.module
    weight = weight_of(module).detach().double()
    if isinstance(module, nn.Linear) or kind_of(module) == "attention":  # attention: in_proj reads the query
        features = x.reshape(-1, weight.shape[1])
        outputs = torch.randint(weight.shape[0], (count,), generator=generator)
        examples = torch.randint(features.shape[0], (count,), generator=generator)
        per_input = features[examples] * weight[outputs]  # [count, in_features]
    elif isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        if module.padding_mode != "zeros":
            raise UnsupportedError(f"criterion 'thinet': {consumer.name} uses padding_mode={module.padding_mode!r}")
        per_input = _conv_contributions(module, weight, x, count, generator)
    else:
        raise UnsupportedError(f"criterion 'thinet': cannot attribute the outputs of {consumer.name} "
                               f"({type(module).__name__}) to its input channels")
    return consumer.per_channel(per_input)


def _conv_contributions(module: nn.modules.conv._ConvNd, weight: torch.Tensor, x: torch.Tensor, count: int,
                        generator: torch.Generator) -> torch.Tensor:
    """For a few output channels k: convolve each input channel alone with W[k, c] (a grouped
    conv with one group per channel), then sample positions."""
    conv = _CONV[weight.dim() - 2]
    in_per_block = module.in_channels // module.groups
    out_per_block = module.out_channels // module.groups
    outputs = torch.randint(module.out_channels, (min(OUTPUTS_PER_BATCH, count),), generator=generator)
    per_output = -(-count // len(outputs))
    rows = []
    for k in outputs.tolist():
        block = k // out_per_block
        start = block * in_per_block
        # float32: grouped convolutions in float64 are an order of magnitude slower on CPU
        examples = torch.randperm(x.shape[0], generator=generator)[:EXAMPLES_PER_OUTPUT]
        alone = conv(x[examples, start:start + in_per_block].float(), weight[k].unsqueeze(1).float(), None,
                     module.stride, module.padding, module.dilation,
                     in_per_block).double()  # [B, in_per_block, *positions]
        alone = alone.transpose(0, 1).reshape(in_per_block, -1).transpose(0, 1)
        picked = alone[torch.randint(alone.shape[0], (per_output,), generator=generator)]
        full = torch.zeros(per_output, module.in_channels, dtype=x.dtype, device=x.device)
        full[:, start:start + in_per_block] = picked
        rows.append(full)
    return torch.cat(rows)[:count]
