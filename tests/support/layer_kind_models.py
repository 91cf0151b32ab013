"""Small models with the layer kinds beyond conv/linear/BatchNorm ("tests.support.layer_kind_models:Name")."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.convnext import LayerNorm2d


class NormZoo(nn.Module):
    """GroupNorm (4 groups), per-channel and shared PReLU, a channels-first LayerNorm on a residual
    sum with a ConvNeXt-style layer scale, then channels-last LayerNorm + Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.act = nn.PReLU(16)
        self.branch = nn.Conv2d(16, 16, 3, padding=1)
        self.gn_per_channel = nn.GroupNorm(16, 16)
        self.layer_scale = nn.Parameter(torch.rand(16, 1, 1) + 0.5)
        self.ln2d = LayerNorm2d(16)
        self.shared_act = nn.PReLU()
        self.ln = nn.LayerNorm(16)
        self.fc1 = nn.Linear(16, 24)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.gn(self.stem(x)))
        x = x + self.layer_scale * self.gn_per_channel(self.branch(x))
        x = self.shared_act(self.ln2d(x))
        x = self.ln(x.permute(0, 2, 3, 1))
        return self.head(F.gelu(self.fc1(x)).mean((1, 2)))


class TokenModel(nn.Module):
    """ViT-like: token embedding, a class token and a learned position embedding, LayerNorm, MLP head."""

    def __init__(self, vocab: int = 32, dim: int = 12, length: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, length + 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 20)
        self.head = nn.Linear(20, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(x + self.pos_embedding)
        return self.head(torch.relu(self.fc(x))[:, 0])


class CustomLayerNorm(nn.LayerNorm):
    """A LayerNorm subclass with a forward prunectl does not know."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x * 2, self.normalized_shape, self.weight, self.bias, self.eps)


class CustomNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.norm = CustomLayerNorm(16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.fc1(x)))


class SpatialLayerNorm(nn.Module):
    """LayerNorm over (C, H, W): its statistic spans channels and positions at once."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm([8, 6, 6])
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.conv(x)))


class ScaleUsedTwice(nn.Module):
    """One per-channel parameter scales two different channel spaces."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(3, 8, 1)
        self.scale = nn.Parameter(torch.ones(8, 1, 1))
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x) * self.scale, self.b(x) * self.scale], 1))


class TinyEncoder(nn.Module):
    """One pre-norm transformer block on a residual stream: self-attention and an MLP."""

    def __init__(self, dim: int = 16, heads: int = 4, batch_first: bool = True) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Linear(8, dim)
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp1 = nn.Linear(dim, 32)
        self.mlp2 = nn.Linear(32, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        h = self.ln_1(x)
        y, _ = self.attn(h, h, h, need_weights=False)
        x = x + y
        x = x + self.mlp2(F.gelu(self.mlp1(self.ln_2(x))))
        return self.head(x.mean(1 if self.batch_first else 0))


class SeqFirstEncoder(TinyEncoder):
    def __init__(self) -> None:
        super().__init__(batch_first=False)


class CrossAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 16)
        self.kv = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.kv(x)
        y, _ = self.attn(self.q(x), kv, kv)
        return self.head(y.mean(1))


class HeadsFromInputWidth(nn.Module):
    """MaxViT-style: attention output reshaped with the width read from its input (``D = x.shape[-1]``),
    which ties the input width to the fixed inner width."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.qkv = nn.Linear(16, 24)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.fc(x))
        b, length, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        out = (torch.softmax(q @ k.transpose(1, 2), -1) @ v).reshape(b, length, d // 2)
        return self.head(out.mean(1))


class AttributeWidthView(nn.Module):
    """ViT's _process_input: a conv output reshaped with its width kept in ``self.width``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 2, stride=2)
        self.width = 8
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = x.reshape(x.shape[0], self.width, -1).permute(0, 2, 1)
        return self.head(x.mean(1))


class FixedWidthView(AttributeWidthView):
    """The width as a literal in the code: nothing the rebuild could change."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = x.reshape(x.shape[0], 8, -1).permute(0, 2, 1)
        return self.head(x.mean(1))


class ComputedWidthView(AttributeWidthView):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        n, c, h, w = x.shape
        x = x.reshape(n, c, h * w).permute(0, 2, 1)
        return self.head(x.mean(1))


class TinyViT(nn.Module):
    """torchvision's VisionTransformer code at a test size (two blocks, width 16, 32x32 images)."""

    def __new__(cls) -> nn.Module:
        from torchvision.models import VisionTransformer

        model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                  mlp_dim=24, num_classes=3)
        nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the classifier
        return model


class TorchEncoder(nn.Module):
    """nn.TransformerEncoder (its layers' fused eval path included) on embedded tokens."""

    norm_first = False

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        layer = nn.TransformerEncoderLayer(32, 8, 48, dropout=0.0, batch_first=True, norm_first=self.norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


class TorchPreNormEncoder(TorchEncoder):
    norm_first = True
