"""Counting MACs: what torch's flop counter sees, including what attention's fused path hides."""
from __future__ import annotations

import torch

from prunectl.measure.size import count_macs
from prunectl.verification.soft_vs_hard import run_and_count
from tests.support.layer_kind_models import TinyEncoder


def test_attention_projections_are_counted_although_the_fused_path_hides_them() -> None:
    model, x = TinyEncoder().eval(), torch.randn(2, 5, 8)
    tokens = 2 * 5
    linear = tokens * (8 * 16 + 16 * 48 + 16 * 16 + 16 * 32 + 32 * 16) + 2 * 16 * 3  # in_proj/out_proj too
    assert count_macs(model, x) == linear
    assert torch.backends.mha.get_fastpath_enabled()  # restored
    assert run_and_count(model, x, "model")[1] == linear  # what prune reports counts the same
    assert torch.backends.mha.get_fastpath_enabled()
