"""Small models torch.fx cannot trace, for the torch.export fallback (importable as factories)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ShapeBranchNet(nn.Module):
    """Branches on the input's width, like timm's MobileViT patching: torch.fx cannot turn a traced
    size into a Python bool; torch.export specialises it on the example input."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 12, 1)
        self.head = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2:  # odd sizes are padded to even
            x = F.pad(x, (0, 1, 0, 1))
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(y + self.bn2(self.conv2(y)))
        y = F.relu(self.conv3(y))[:, :, 1:, 1:]  # an aten slice of the spatial dims
        return self.head(y.mean((2, 3)))


class DataBranchNet(nn.Module):
    """Branches on tensor values: neither torch.fx nor torch.export can capture it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if bool(y.sum() > 0) else -y


@torch.fx.wrap
def relu_noting_calls(x: torch.Tensor, calls: list) -> torch.Tensor:
    calls.append(1)  # mutates its list argument: fine eagerly; fx freezes call arguments into immutable lists
    return F.relu(x)


class FxGraphFailsNet(nn.Module):
    """fx traces it, but its graph cannot run (as torchvision's Swin3D): the model itself can."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(relu_noting_calls(self.conv1(x), []))


class TinyDetector(nn.Module):
    """A backbone plus a head that branches on its scores, as detectors' post-processing does:
    the whole model cannot be captured, its backbone can (prune --module backbone)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.head(self.backbone(x)).flatten(1)
        if scores.max() > 0:  # data-dependent: neither torch.fx nor torch.export can follow it
            return scores.softmax(1)
        return scores
