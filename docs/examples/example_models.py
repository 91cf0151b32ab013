"""The model of docs/examples/auto_in_process.py, in a module of its own: a bundle names its
model class by import path (``example_models:MLP``), and ``__main__`` is no such path."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    """Every width a constructor argument, so the bundle is rebuilt without pickle (MLP(**args))."""

    def __init__(self, hidden1: int = 128, hidden2: int = 64):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, hidden1), nn.Linear(hidden1, hidden2), nn.Linear(hidden2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
