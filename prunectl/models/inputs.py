"""The inputs a model is traced and checked on: its default shape and dtype, and seeded batches."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import SpecError, VerificationError
from ..formats.spec import InputSpec, ModelRef
from .forward import run
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


def make_inputs(spec: InputSpec, seed: int, count: int = 3, model: nn.Module | None = None,
                later_shape: tuple[int, ...] | None = None) -> list[torch.Tensor]:
    """The spec's input shape, ``count`` seeded random batches: floats at growing scales, token ids
    spread over the whole vocabulary of ``model`` (``token_ids_below``). ``later_shape``: the shape
    of every batch after the first (``lighter_inputs``)."""
    generator = torch.Generator().manual_seed(seed)
    dtype = torch_dtype(spec.dtype)
    high = None if dtype.is_floating_point else token_ids_below(model)
    inputs = []
    for i in range(count):
        shape = spec.shape if i == 0 or later_shape is None else later_shape
        if dtype.is_floating_point:
            x = torch.randn(shape, generator=generator, dtype=torch.float64) * (1.0 + 2.0 * i)
        else:
            x = torch.randint(0, high, shape, generator=generator)
        inputs.append(x.to(dtype))
    return inputs


def lighter_inputs(model: nn.Module, spec: InputSpec, seed: int, count: int = 3) -> list[torch.Tensor]:
    """The proof's inputs: the spec's input first, then ``count - 1`` batches whose spatial sides are
    a quarter as long (at least ``MIN_SIDE``) when ``model`` runs on them; a model that takes only
    the spec's shape gets one later batch, the last (largest scale) of ``make_inputs``.

    The first input, at the real size, carries every size-dependent path (a flatten into a Linear,
    a window size), the per-layer comparison and the MAC count. The later ones only vary which
    units are active (other values, larger scales) so that a mismatch hidden in one activation
    pattern shows in another; that depends on the values at each position, not on how many
    positions there are, and a 56x56 map still has 3136 of them per channel. At the spec's own
    size a later batch costs a whole float64 pass of the unpruned model (1.1 s of a ViT-B's
    proof on one core), and the one at the largest scale reaches the saturating units the middle
    one would; docs/decisions.md, "How many inputs the proof runs"."""
    smaller = _smaller_shape(spec.shape) if torch_dtype(spec.dtype).is_floating_point else None
    if smaller is not None:
        inputs = make_inputs(spec, seed, count, model, later_shape=smaller)
        try:
            run(model, inputs[-1], "model on a smaller input")
            return inputs
        except (SpecError, VerificationError):
            pass  # the model needs its input size: the first and the last batch at the spec's shape
    inputs = make_inputs(spec, seed, count, model)
    return inputs[:1] + inputs[-1:] if len(inputs) > 2 else inputs


MIN_SIDE = 16


def _smaller_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """(N, C, H/4, W/4, ...) for an image-like shape whose sides are long enough to shrink."""
    if len(shape) < 4:
        return None
    sides = tuple(max(MIN_SIDE, side // 4) for side in shape[2:])
    return None if sides == tuple(shape[2:]) else (*shape[:2], *sides)


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
