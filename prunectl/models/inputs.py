"""The inputs a model is traced and checked on: its default shape and dtype, and seeded batches."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..formats.spec import InputSpec, ModelRef
from .hf_provider import default_input_dtype as hf_input_dtype
from .hf_provider import default_input_shape as hf_default_shape
from .hf_provider import is_hf_model

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32}
# torchvision's and timm's classifiers are built for ImageNet-sized RGB images (a timm model made
# for another size says so in its error); any other model needs --input-shape
_DEFAULT_SHAPES = {"torchvision": (1, 3, 224, 224), "timm": (1, 3, 224, 224)}


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


def make_inputs(spec: InputSpec, seed: int, count: int = 3, model: nn.Module | None = None) -> list[torch.Tensor]:
    """The spec's input shape, ``count`` seeded random batches: floats at growing scales, token ids
    spread over the whole vocabulary of ``model`` (``token_ids_below``)."""
    generator = torch.Generator().manual_seed(seed)
    dtype = torch_dtype(spec.dtype)
    high = None if dtype.is_floating_point else token_ids_below(model)
    inputs = []
    for i in range(count):
        if dtype.is_floating_point:
            x = torch.randn(spec.shape, generator=generator, dtype=torch.float64) * (1.0 + 2.0 * i)
        else:
            x = torch.randint(0, high, spec.shape, generator=generator)
        inputs.append(x.to(dtype))
    return inputs


def token_ids_below(model: nn.Module | None) -> int:
    """The exclusive upper bound of random token ids for ``model``: a transformers model's
    ``vocab_size``, else the rows of its first ``nn.Embedding``, else 16. Ids in [0, 16) are [PAD]
    and unused tokens on a real BERT: the proof would never see the text the model is for."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and vocab > 0:
        return vocab
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None) if model is not None else None
    return embedding.num_embeddings if embedding is not None else 16


def default_input_shape(model_ref: ModelRef | None, model: nn.Module | None = None) -> tuple[int, ...] | None:
    """The input shape to trace with when none is given, for factories whose input is well known
    (a transformers model's from its config: 1x16 token ids, or its image size)."""
    if model is not None and is_hf_model(model):
        return hf_default_shape(model)
    if model_ref is None:
        return None
    return _DEFAULT_SHAPES.get(model_ref.factory.split(":", 1)[0])


def default_input_dtype(model: nn.Module | None) -> str:
    """float32, or int64 for models that take token ids (transformers text models)."""
    return (hf_input_dtype(model) if model is not None else None) or "float32"
