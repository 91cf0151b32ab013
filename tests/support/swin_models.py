"""torchvision's SwinTransformer and MaxVit code at a test size, for tests that prune through a factory string."""
from __future__ import annotations

import torch.nn as nn

INPUT_SHAPE = (1, 3, 16, 16)  # 8x8 tokens after the 2x2 patch embedding: one shifted 4x4 window grid
MAXVIT_INPUT_SHAPE = (1, 3, 32, 32)


def _tiny_swin(v2: bool) -> nn.Module:
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    extra = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    # two stages (one patch merging), heads of width 8, a shifted second block in each stage
    return SwinTransformer(patch_size=[2, 2], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                           stochastic_depth_prob=0.0, num_classes=5, **extra)


class TinySwin(nn.Module):
    def __new__(cls) -> nn.Module:
        return _tiny_swin(v2=False)


class TinySwinV2(nn.Module):
    def __new__(cls) -> nn.Module:
        return _tiny_swin(v2=True)


class ConcatIntoWindowAttention(nn.Module):
    """Window attention reading a channel concatenation: the tracer cannot cut its qkv columns there."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.swin_transformer import ShiftedWindowAttention

        self.left, self.right = nn.Linear(3, 8), nn.Linear(3, 8)
        self.attn = ShiftedWindowAttention(16, [4, 4], [0, 0], num_heads=2)
        self.head = nn.Linear(16, 4)

    def forward(self, x):  # x: (N, H, W, 3)
        import torch

        y = self.attn(torch.cat([self.left(x), self.right(x)], dim=-1))
        return self.head(y.mean(dim=(1, 2)))


class TinyMaxVit(nn.Module):
    """torchvision's MaxVit code at a test size: 32x32 images, two stages, heads of width 8."""

    def __new__(cls) -> nn.Module:
        from torchvision.models import MaxVit

        return MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                      block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=5)
