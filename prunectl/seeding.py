"""Seeds derived from the user's ``--seed``: the same inputs give the same numbers, run after run.

Two needs, two functions, each the one place its formula lives:
- ``named_generator``: a generator for one named thing (a layer's random scores, its random
  unstructured mask), independent of the order in which the names are visited;
- ``mix_seed``: one 63-bit seed from several integers (a fine-tune's epoch and batch, a search
  step), stable across runs, platforms and Python's hash randomisation.
"""
from __future__ import annotations

import hashlib
import zlib

import torch


def named_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded by ``seed`` and ``name``."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
