"""First-order Taylor expansion (Molchanov et al., "Pruning CNNs for resource efficient inference", ICLR 2017)."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..errors import SpecError
from .base import Criterion, LayerView
from .observe import per_example_channel_means


class Taylor(Criterion):
    """Score = mean over examples of |mean over positions of activation x dLoss/dactivation|.

    Molchanov et al. (2017, eq. 8): removing feature map z changes the loss by about
    ``|1/M sum_m dC/dz_m * z_m|`` (M positions), averaged over the examples. The activation is
    observed at the layer's norm output when the spec lists one after it, else at the layer
    output; if a ReLU follows, this equals the product taken after the ReLU (where the ReLU
    zeroes z, it also zeroes the gradient). Losses that average over the batch (cross-entropy,
    MSE) are multiplied back by the batch size to give per-example gradients. Unlike the paper
    we do not L2-normalise per layer: selection divides every layer's scores by their mean.
    Torch-Pruning's ``TaylorImportance`` is a different quantity (|weight x weight gradient|,
    Molchanov et al. 2019), so there is no peer implementation to compare with.
    """

    name = "taylor"
    description = "first-order Taylor |activation x gradient| on the data (Molchanov et al. 2017)"
    needs_data = True

    def __init__(self) -> None:
        self._scores: dict[str, torch.Tensor] = {}

    def prepare(self, model: nn.Module, layers: list[LayerView], data) -> None:
        if not data.has_targets:
            raise SpecError(f"criterion 'taylor' needs targets and a loss; --data {data.source} has no targets "
                            "(give a .pt/.npz with 'targets', or a task)")
        # a private copy: gradients and requires_grad flags must not leak into the caller's model
        work = copy.deepcopy(model)
        for parameter in work.parameters():
            parameter.requires_grad_(True)
        modules = dict(work.named_modules())
        sums: dict[str, torch.Tensor] = {}
        examples = 0
        batch_size = 0
        handles = []
        for view in layers:
            producer = modules[view.name]
            target = modules[view.next_norm_name] if view.next_norm_name else producer

            def keep(_module, _inputs, output, view=view, producer=producer) -> None:
                def on_grad(grad: torch.Tensor) -> None:
                    product = (output.detach().double() * grad.double()) * batch_size
                    total = per_example_channel_means(product, producer).abs().sum(dim=0)
                    sums[view.name] = sums.get(view.name, 0) + total
                output.register_hook(on_grad)
            handles.append(target.register_forward_hook(keep))
        try:
            with torch.enable_grad():
                for inputs, targets in data.batches:
                    batch_size = len(inputs)
                    work.zero_grad(set_to_none=True)
                    data.loss(work(inputs), targets).backward()
                    examples += batch_size
        finally:
            for handle in handles:
                handle.remove()
        self._scores = {name: total / examples for name, total in sums.items()}

    def score(self, layer: LayerView) -> torch.Tensor:
        if layer.name not in self._scores:
            raise SpecError(f"criterion 'taylor': layer {layer.name!r} got no gradient from the loss; "
                            "is its output used?")
        return self._scores[layer.name]

