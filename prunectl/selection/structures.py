"""A rate per structure of a transformer: attention heads, MLP width, hidden width (``--rate-heads``,
``--rate-mlp``, ``--rate-hidden``).

One ``--rate`` cuts every structure alike, but they are not alike: Minitron and Sheared-LLaMA cut
the MLP hardest and the hidden width (every layer's residual stream) least. A group is
``heads`` when its channels are attention heads or KV groups, ``hidden`` when it holds the input
embedding's outputs (the residual stream: embeddings, every norm, every projection's inputs,
the lm_head's), and ``mlp`` otherwise (the FFN intermediate widths). A layer's own rate in the
spec still wins over its structure's, and the structure's over ``--rate``.
"""
from __future__ import annotations

import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup
from ..errors import SpecError

STRUCTURES = ("heads", "mlp", "hidden")


def structure_of(group: ChannelGroup, embedding: str | None) -> str:
    if group.heads:
        return "heads"
    if embedding is not None and any(m.module == embedding and m.side == "out" for m in group.members):
        return "hidden"
    return "mlp"


def input_embedding(model: nn.Module) -> str | None:
    """The name of the model's input embedding (transformers' ``get_input_embeddings``), or None."""
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    return next((name for name, module in model.named_modules() if module is embedding), None) \
        if embedding is not None else None


def apply_structure_rates(groups: list[ChannelGroup], model: nn.Module, rates: dict[str, float]) -> None:
    """Give every group without a rate of its own the rate of its structure."""
    if not rates:
        return
    unknown = sorted(set(rates) - set(STRUCTURES))
    if unknown:
        raise SpecError(f"--rate-{unknown[0]}: not a structure; one of {', '.join(STRUCTURES)}")
    embedding = input_embedding(model)
    if "hidden" in rates and embedding is None:
        raise SpecError(f"--rate-hidden: {type(model).__name__} has no input embedding whose width is the hidden "
                        "width (a transformers model)")
    found = {structure_of(group, embedding) for group in groups}
    for structure in rates:
        if structure not in found:
            raise SpecError(f"--rate-{structure}: {type(model).__name__} has no {structure} channels to cut")
    for group in groups:
        rate = rates.get(structure_of(group, embedding))
        if rate is not None and not group.rates:
            group.rates.append(rate)


__all__ = ["STRUCTURES", "apply_structure_rates", "input_embedding", "structure_of"]
