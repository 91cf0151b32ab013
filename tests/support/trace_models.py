"""Small models for the tracer's graph-rule tests (importable as "tests.support.trace_models:Name")."""
from __future__ import annotations

import torch
import torch.nn as nn


class TwoBranchAdd(nn.Module):
    """Two convs read the input and are added: their output channels must be cut together."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1)
        self.c = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x)) + self.b(x)
        y = nn.functional.adaptive_avg_pool2d(self.c(y), 4)
        return self.fc(torch.flatten(y, 1))


class SqueezeExcite(nn.Module):
    """conv -> bn -> x * sigmoid(fc2(relu(fc1(mean(x))))) -> conv: the multiply couples fc2 to bn."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc1 = nn.Conv2d(16, 4, 1)
        self.fc2 = nn.Conv2d(4, 16, 1)
        self.project = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        x = self.project(x * scale)
        return self.head(x.mean((2, 3)))


class ChannelCumsum(nn.Module):
    """An op prunectl does not know (cumsum over channels) sits between two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.conv1(x)).cumsum(1))
        return self.head(x.mean((2, 3)))


class ConcatBlock(nn.Module):
    """Dense/inception style: two branches concatenated on channels, a norm over the concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(8, 6, 1)
        self.right = nn.Conv2d(8, 10, 3, padding=1)
        self.norm = nn.BatchNorm2d(24)
        self.mix = nn.Conv2d(24, 12, 1)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.cat([x, self.left(x), self.right(x)], 1)
        x = self.mix(torch.relu(self.norm(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class SharedWidth(nn.Module):
    """One constructor arg (``hidden``) sets the width of two layers in a row."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 2)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


class ReshapedLayerScale(nn.Module):
    """timm's ConvNeXt/LayerScale2d: a vector parameter reshaped to broadcast over NCHW, with -1
    (``literal=True``: a literal channel count, which would not shrink with the cut)."""

    def __init__(self, literal: bool = False) -> None:
        super().__init__()
        self.literal = literal
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        gamma = self.gamma.view(1, 8, 1, 1) if self.literal else self.gamma.reshape(1, -1, 1, 1)
        return self.head(y + y.mul(gamma))


def literal_layer_scale() -> ReshapedLayerScale:
    return ReshapedLayerScale(literal=True)


class HeldShapeLayerScale(nn.Module):
    """timm's metaformer (PoolFormer, ConvFormer, CAFormer) layer scale, its own ``Scale`` module:
    ``self.scale.view(self.shape)`` with ``shape = (C, 1, 1)`` held by the module, not a -1."""

    def __init__(self) -> None:
        from timm.models.metaformer import Scale

        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.layer_scale = Scale(8)
        with torch.no_grad():  # timm starts it at ones; distinct values make a wrong cut show
            self.layer_scale.scale.copy_(torch.rand(8) + 0.5)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.head(y + self.layer_scale(y))


class RelativeBiasAttention(nn.Module):
    """timm's Swin attention in miniature: per-head relative position bias gathered from a table
    (``table[index].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)``) added to the scores."""

    def __init__(self, dim: int = 16, num_heads: int = 4, tokens: int = 6) -> None:
        super().__init__()
        self.num_heads, self.tokens = num_heads, tokens
        self.embed = nn.Linear(3, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 2)
        self.relative_position_bias_table = nn.Parameter(torch.randn(2 * tokens - 1, num_heads))
        positions = torch.arange(tokens)
        self.register_buffer("relative_position_index", positions[:, None] - positions[None, :] + tokens - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q * 0.5) @ k.transpose(-2, -1)
        area = self.tokens  # timm's window_area: an int attribute, not read from x
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(area, area, -1)
        scores = scores + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.head(self.proj(out).mean(1))


class SlicedConcat(nn.Module):
    """GhostNet's module: ``cat([x1, x2])[:, :out]``, the slice keeping every channel (``out`` the
    whole width) or dropping some (``out`` smaller)."""

    def __init__(self, out: int = 16) -> None:
        super().__init__()
        self.out = out
        self.primary = nn.Conv2d(3, 8, 1)
        self.cheap = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(out, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.primary(x), self.cheap(x)], dim=1)[:, :self.out])


def truncating_concat() -> SlicedConcat:
    return SlicedConcat(out=12)


class GatedHalves(nn.Module):
    """A fused gate/up projection: ``fc``'s output chunked in two halves multiplied together (Phi-3's
    gate_up_proj): one channel space, cut at the same indices in both halves."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.down = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.down(torch.relu(gate) * up)


class HalvesReadApart(nn.Module):
    """``fc``'s halves read by two layers that never see them together (GhostNet-style): not one space."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.a = nn.Linear(8, 4)
        self.b = nn.Linear(8, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.fc(x).chunk(2, dim=1)
        return self.out(self.a(first) + self.b(second))


class TimmRmsNorms(nn.Module):
    """timm's norms that scale by a statistic over the channels: ``RmsNorm2d`` and ``SimpleNorm2d``
    (ConvNeXt's ``*_rms``) on NCHW, ``RmsNorm`` and ``SimpleNorm`` over the last dim."""

    def __init__(self) -> None:
        from timm.layers import RmsNorm, RmsNorm2d, SimpleNorm, SimpleNorm2d

        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.rms2d, self.simple2d = RmsNorm2d(8), SimpleNorm2d(8)
        self.mix = nn.Conv2d(8, 8, 1)
        self.rms, self.simple = RmsNorm(8), SimpleNorm(8)
        self.head = nn.Linear(8, 2)
        with torch.no_grad():  # timm starts the scales at ones; distinct values make a wrong cut show
            for norm in (self.rms2d, self.simple2d, self.rms, self.simple):
                norm.weight.copy_(torch.rand(8) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mix(self.simple2d(self.rms2d(self.conv(x)))).mean((2, 3))
        return self.head(self.simple(self.rms(y)))


class StandardisedConvNet(nn.Module):
    """timm's NFNet conv, ``ScaledStdConv2d``: each filter standardised over its inputs (with a
    per-filter ``gain``) before the convolution, between two plain convs."""

    def __init__(self) -> None:
        from timm.layers import ScaledStdConv2d

        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.std = ScaledStdConv2d(8, 8, 3, padding=1)
        with torch.no_grad():
            self.std.gain.copy_(torch.rand(8, 1, 1, 1) + 0.5)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.std(torch.relu(self.stem(x)))))


class ResponseNormMlp(nn.Module):
    """ConvNeXt-V2's MLP in miniature with timm's own ``GlobalResponseNorm``: NCHW after a 1x1 conv,
    and channels-last after a Linear."""

    def __init__(self) -> None:
        from timm.layers.grn import GlobalResponseNorm

        super().__init__()
        self.fc1 = nn.Conv2d(3, 8, 1)
        self.grn_nchw = GlobalResponseNorm(8, channels_last=False)
        self.fc2 = nn.Linear(8, 8)
        self.grn_nhwc = GlobalResponseNorm(8, channels_last=True)
        self.head = nn.Linear(8, 2)
        with torch.no_grad():  # timm starts weight and bias at zero: the norm would be the identity
            for norm in (self.grn_nchw, self.grn_nhwc):
                norm.weight.normal_()
                norm.bias.normal_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.grn_nchw(torch.relu(self.fc1(x))).permute(0, 2, 3, 1)
        return self.head(self.grn_nhwc(torch.relu(self.fc2(y))).mean((1, 2)))


class NoBiasLayerNorms(nn.Module):
    """timm's metaformer (PoolFormerV2, ConvFormer, CAFormer) LayerNorms without a bias:
    ``LayerNorm2dNoBias`` on NCHW and ``LayerNormNoBias`` over the last dim."""

    def __init__(self) -> None:
        from timm.models.metaformer import LayerNorm2dNoBias, LayerNormNoBias

        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm2d = LayerNorm2dNoBias(8)
        self.mix = nn.Conv2d(8, 8, 1)
        self.norm = LayerNormNoBias(8)
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            self.norm2d.weight.copy_(torch.rand(8) + 0.5)
            self.norm.weight.copy_(torch.rand(8) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.mix(self.norm2d(self.conv(x))).mean((2, 3))))
