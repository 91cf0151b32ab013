"""Small attention blocks written with reshapes, for the heads tests (importable by factory)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SplitHeads(nn.Module):
    """q, k, v projections viewed as heads; ``head_count`` says how the view gets its head count:
    "attribute" (self.num_heads), "inferred" (-1) or "literal" (a number in the code)."""

    def __init__(self, head_count: str = "attribute", dim: int = 24, heads: int = 4) -> None:
        super().__init__()
        self.head_count, self.num_heads, self.head_dim = head_count, heads, dim // heads
        self.embed = nn.Linear(8, dim)
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 3)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        count = {"attribute": self.num_heads, "inferred": -1, "literal": 4}[self.head_count]
        return x.view(n, length, count, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        weights = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim ** 0.5, dim=-1)
        context = (weights @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.head((x + self.out(context)).mean(1))


class InferredHeads(SplitHeads):
    def __init__(self) -> None:
        super().__init__("inferred")


class UnmetHeads(nn.Module):
    """One attribute sizes two head splits whose heads never meet: they cannot share it."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads = 2
        self.a, self.b = nn.Linear(8, 16), nn.Linear(8, 16)
        self.read_a, self.read_b = nn.Linear(16, 3), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        a = self.a(x).view(n, length, self.num_heads, 8).reshape(n, length, -1)
        b = self.b(x).view(n, length, self.num_heads, 8).reshape(n, length, -1)
        return self.read_a(a) + self.read_b(b)


class MixesChannels(nn.Module):
    """A Gram matrix over the channels (contracts them): the tracer must refuse to cut through it."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.proj(x))
        return self.head((y @ y.transpose(-2, -1)).mean(1))


class TinyTimmViT(nn.Module):
    """timm's VisionTransformer at a test size (2 blocks of 3 heads of 64, 32x32 images)."""

    fused = True

    def __new__(cls) -> nn.Module:
        import timm

        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, patch_size=8,
                                  num_classes=3)
        for block in model.blocks:
            block.attn.fused_attn = cls.fused
        return model


class TinyTimmViTEager(TinyTimmViT):
    """The same, attention computed as q @ k^T, softmax, @ v (timm's path without fused attention)."""

    fused = False


class LinearToSequence(nn.Module):
    """A decoder's Linear whose outputs are viewed as (channels, length) for a conv: each conv input
    channel is a group of ``length`` Linear outputs, cut whole (the same rule as heads)."""

    def __init__(self) -> None:
        super().__init__()
        self.channels = 6
        self.fc = nn.Linear(8, 6 * 5)
        self.conv = nn.Conv1d(6, 4, 3, padding=1)
        self.head = nn.Linear(4 * 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.fc(x)).view(x.shape[0], self.channels, 5)
        return self.head(F.relu(self.conv(y)).flatten(1))


class ComputedShapeHeads(SplitHeads):
    """BERT's (Electra's) eager attention: the merged shape is computed, ``x.size()[:-2] +
    (self.all_head_size,)``, and another attribute (layer_idx) equals the head count."""

    def __init__(self) -> None:
        super().__init__("attribute")
        self.layer_idx, self.all_head_size = 4, 24

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        weights = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim ** 0.5, dim=-1)
        context = (weights @ v).permute(0, 2, 1, 3).contiguous()
        context = context.view(context.size()[:-2] + (self.all_head_size,))
        return self.head((x + self.out(context)).mean(1))


class DigitsTimmViT(nn.Module):
    """timm's VisionTransformer for the digits task's 1x8x8 images (one block of 3 heads of 64, patches of 4)."""

    def __new__(cls) -> nn.Module:
        import timm

        return timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=8, patch_size=4,
                                 in_chans=1, num_classes=10)
