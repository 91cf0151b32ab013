"""Two small models for 8x8 digits, CAC style: every prunable width is a constructor argument."""
from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """64 -> 64 -> 32 -> 10 (the CAC MNIST MLP's shape, sized for 8x8 inputs)."""

    def __init__(self, out_ch_fc1: int = 64, out_ch_fc2: int = 32, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(64, out_ch_fc1)
        self.fc2 = nn.Linear(out_ch_fc1, out_ch_fc2)
        self.fc3 = nn.Linear(out_ch_fc2, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(x.flatten(1)))
        return self.fc3(self.relu(self.fc2(x)))


class DigitsCNN(nn.Module):
    """conv(1->16) bn relu, conv(16->32, stride 2) bn relu, flatten (4x4), fc 64, fc 10."""

    def __init__(self, out_ch_conv1: int = 16, out_ch_conv2: int = 32, out_ch_fc1: int = 64, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, out_ch_conv1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch_conv1)
        self.conv2 = nn.Conv2d(out_ch_conv1, out_ch_conv2, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch_conv2)
        self.fc1 = nn.Linear(out_ch_conv2 * 4 * 4, out_ch_fc1)
        self.fc2 = nn.Linear(out_ch_fc1, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


MODELS = {"mlp": DigitsMLP, "cnn": DigitsCNN}

# The spec of each model (prunectl spec format, version 1), in forward order.
SPECS = {
    "mlp": {"fc1": {"arg": "out_ch_fc1"}, "fc2": {"arg": "out_ch_fc2"}, "fc3": {"arg": None}},
    "cnn": {"conv1": {"arg": "out_ch_conv1"}, "bn1": {"arg": "out_ch_conv1"},
            "conv2": {"arg": "out_ch_conv2"}, "bn2": {"arg": "out_ch_conv2"},
            "fc1": {"arg": "out_ch_fc1"}, "fc2": {"arg": None}},
}


def build(name: str, **args) -> nn.Module:
    """The ``prunectl.models`` provider: ``digits:mlp`` and ``digits:cnn``."""
    if name not in MODELS:
        from prunectl.errors import SpecError

        raise SpecError(f"model factory 'digits:{name}': unknown; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](**args)


def spec_for(name: str, rate: float = 0.5) -> dict:
    return {"prunectl_spec": 1, "model": {"factory": f"digits:{name}", "args": {}},
            "input": {"shape": [1, 1, 8, 8], "dtype": "float32"}, "criterion": "l1", "rate": rate,
            "layers": SPECS[name]}
