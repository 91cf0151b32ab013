"""Pruning inside training: the ``Pruner`` a training loop calls, its schedules, network-slimming
sparsity, and a Lightning callback (``prunectl.hooks.lightning``, extra ``lightning``)."""
from .pruner import Pruner
from .schedules import SCHEDULES, Event, agp, layer_by_layer, linear, lottery, lottery_rounds, one_shot
from .slimming import NormSparsity

__all__ = ["Pruner", "Event", "SCHEDULES", "agp", "layer_by_layer", "linear", "lottery", "lottery_rounds",
           "one_shot", "NormSparsity"]
