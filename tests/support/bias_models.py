"""Two-layer MLPs whose classifier has no bias: one constructor can give it one (``bias=True``),
the other cannot (--bias-compensation's flag probe on a ``pkg.module:Class`` factory)."""
from __future__ import annotations

import torch
from torch import nn


class BiasFlagMLP(nn.Module):
    def __init__(self, hidden: int = 16, bias: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 4, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class NoBiasMLP(nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
