"""APoZ: Average Percentage of Zeros (Hu et al., "Network Trimming", 2016)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import SpecError
from .base import Criterion, LayerView
from .observe import channels_first, forward_over, observed_module


class APoZ(Criterion):
    """Score = 1 - APoZ, where APoZ is the fraction of a channel's post-ReLU outputs that are zero.

    Hu et al. count zeros after the ReLU that follows each layer, over every example and
    spatial position of the calibration data; channels that are mostly zero are pruned. Which
    activation: prunectl observes the output of the layer's norm when the spec lists one
    right after it, else the layer's own output, and counts values <= 0, i.e. exactly the
    zeros a ReLU applied there produces. (In a residual block whose ReLU comes after the sum,
    this measures the layer's own branch before the addition.)
    """

    name = "apoz"
    description = "1 - fraction of zero post-ReLU outputs over the data (Hu et al. 2016)"
    needs_data = True

    def __init__(self) -> None:
        self._zero_fraction: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def prepare(self, model: nn.Module, layers: list[LayerView], data) -> None:
        zeros: dict[str, torch.Tensor] = {}
        totals: dict[str, int] = {}
        handles = []
        for view in layers:
            def count(_module, _inputs, output, view=view) -> None:
                values = channels_first(output.detach(), view.module)
                zeros[view.name] = zeros.get(view.name, 0) + (values <= 0).sum(dim=1).double()
                totals[view.name] = totals.get(view.name, 0) + values.shape[1]
            handles.append(observed_module(view).register_forward_hook(count))
        forward_over(model, data, handles)
        self._zero_fraction = {name: zeros[name] / totals[name] for name in zeros}

    def score(self, layer: LayerView) -> torch.Tensor:
        if layer.name not in self._zero_fraction:
            raise SpecError(f"criterion 'apoz': layer {layer.name!r} produced no output on the data; "
                            "is it used in forward()?")
        return 1.0 - self._zero_fraction[layer.name]
