"""The digits plugin's trained MLP, as the auto tests hand it to ``prunectl.auto`` (needs prunectl_digits)."""
from __future__ import annotations

from pathlib import Path

import torch

from prunectl_digits.models import DigitsMLP


def mlp_of(digits: Path) -> DigitsMLP:
    """A fresh DigitsMLP with the weights of ``digits/mlp.pt`` (the auto conftest's checkpoints)."""
    model = DigitsMLP()
    model.load_state_dict(torch.load(digits / "mlp.pt", weights_only=True)["state_dict"])
    return model
