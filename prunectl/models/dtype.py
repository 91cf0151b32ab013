"""The floating dtype a run builds its models in (``prune --dtype bfloat16``).

Models are built inside ``weights_dtype(name)``: torch's default dtype is ``name`` while the
block runs, so every parameter a constructor makes (on meta too) has that dtype, and a strict
load (``loading.materialize``) casts the checkpoint's weights to it tensor by tensor, never
holding a float32 copy of the model. This is how transformers' own ``from_pretrained(dtype=...)``
builds a model, so buffers a constructor computes in an explicit dtype (RoPE's ``inv_freq`` in
float32) stay as transformers has them. The proof still runs in float64
(verification/precision.py). A bundle records the dtype (manifest ``dtype``) and is rebuilt in it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_WEIGHT_DTYPE = "float32"


@contextmanager
def weights_dtype(name: str | None) -> Iterator[None]:
    """Models built in the block have ``name``'s floating dtype (None: as they are)."""
    if name is None:
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(WEIGHT_DTYPES[name])
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
