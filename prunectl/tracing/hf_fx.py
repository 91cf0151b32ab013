"""transformers models through transformers' own torch.fx tracer (plain torch.fx fails on them:
their forward branches on ``None`` inputs and on shapes), with the walk's leaf rule."""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import UnsupportedError, first_line
from ..layers import kinds as L
from ..models.hf_provider import main_input_name
from .graph import quiet_logs


def _hf_layer_tracer() -> type:
    """transformers' HFTracer with the walk's leaf rule (defined here: transformers is optional)."""
    from transformers.utils.fx import HFTracer

    class HFLayerTracer(HFTracer):
        def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
            return L.kind_of(module) != "other" or super().is_leaf_module(module, qualified_name)

    return HFLayerTracer


def hf_graph(model: nn.Module) -> fx.GraphModule:
    from transformers.utils.fx import symbolic_trace

    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    tracer_cls = _hf_layer_tracer()
    # the tracer swaps torch.empty/zeros/ones/... for proxy-making wrappers and can leave some
    # behind (seen with transformers 4.57: a later `with torch.device("meta")` build got CPU
    # weights); put back exactly what was there
    torch_functions = {name: getattr(torch, name) for name in tracer_cls._TORCH_METHODS_TO_PATCH}
    try:
        if use_cache:  # an encoder has no cache; transformers' tracer would warn and set this itself
            config.use_cache = False
        with quiet_logs():
            return symbolic_trace(model, input_names=[main_input_name(model)], tracer_cls=tracer_cls)
    except Exception as exc:
        raise UnsupportedError(f"{type(model).__name__}: transformers' torch.fx tracer cannot trace it "
                               f"({first_line(exc)})") from None
    finally:
        for name, function in torch_functions.items():
            setattr(torch, name, function)
        if use_cache:
            config.use_cache = use_cache
