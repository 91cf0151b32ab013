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


class ActivationBeforeNorm(nn.Module):
    """conv -> ReLU -> BatchNorm: the spec lists bn2 right after conv2, but bn2 reads the ReLU's
    output, so a shift of conv2's output cannot go into bn2's running mean."""

    def __init__(self, out_ch_conv1: int = 16, out_ch_conv2: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, out_ch_conv1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch_conv1)
        self.conv2 = nn.Conv2d(out_ch_conv1, out_ch_conv2, 3, padding=1, bias=False)
        self.act = nn.ReLU()
        self.bn2 = nn.BatchNorm2d(out_ch_conv2)
        self.fc = nn.Linear(out_ch_conv2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.bn2(self.act(self.conv2(x)))
        return self.fc(x.mean((2, 3)))
