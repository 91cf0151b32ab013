"""Window attention whose residual width was cut while its heads stay whole (Swin, MaxViT).

torchvision's ``ShiftedWindowAttention(V2).forward`` calls ``shifted_window_attention``, which
takes ``C = x.shape[-1]`` both as the residual width and as the heads' inner width
(``head_dim = C // num_heads``, and the reshapes around ``qkv`` and ``proj``). Cutting the
residual stream must change only what reads and writes it: ``qkv``'s input columns and
``proj``'s output rows. ``qkv``'s output rows, ``proj``'s input columns, ``num_heads`` and
``head_dim`` (hence the softmax scale) stay whole, so soft == hard is exact, as for
``ResidualCutMultiheadAttention`` (attention.py; docs/decisions.md).

The hard model's modules get the subclasses below (same parameters and state_dict keys) whose
forward is torchvision's computation with the inner width read from ``qkv``'s weight (rows / 3)
and the output width from ``proj``'s. ``window_attention.adapt_window_attention`` swaps the class
where the shapes no longer match; this module imports torchvision, so it is imported only when
a model holds such a module.

MaxViT's ``RelativePositionalMultiHeadAttention`` has the same problem in one line: it reshapes the
heads' output to the input's width ``D`` before ``merge``; its subclass reshapes to
``n_heads * head_dim`` instead.
"""
from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2


def residual_cut_window_attention(x: torch.Tensor, qkv_weight: torch.Tensor, proj_weight: torch.Tensor,
                                  relative_position_bias: torch.Tensor, window_size: list[int], num_heads: int,
                                  shift_size: list[int], attention_dropout: float = 0.0, dropout: float = 0.0,
                                  qkv_bias: torch.Tensor | None = None, proj_bias: torch.Tensor | None = None,
                                  logit_scale: torch.Tensor | None = None, training: bool = True) -> torch.Tensor:
    """torchvision's ``shifted_window_attention`` (0.29, same op order, so the same numbers when
    nothing is cut) with the heads' width taken from ``qkv_weight`` and the output width from
    ``proj_weight`` instead of from the input's last dim."""
    B, H, W, C = x.shape
    inner = qkv_weight.shape[0] // 3  # the heads: num_heads * head_dim, never cut
    head_dim = inner // num_heads
    width_out = proj_weight.shape[0]
    # pad feature maps to multiples of window size
    pad_r = (window_size[1] - W % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - H % window_size[0]) % window_size[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_H, pad_W, _ = x.shape

    shift_size = shift_size.copy()
    # if the window is larger than the feature map, there is no need to shift it
    if window_size[0] >= pad_H:
        shift_size[0] = 0
    if window_size[1] >= pad_W:
        shift_size[1] = 0
    if sum(shift_size) > 0:  # cyclic shift
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))

    # partition windows
    num_windows = (pad_H // window_size[0]) * (pad_W // window_size[1])
    x = x.view(B, pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * num_windows, window_size[0] * window_size[1], C)

    # multi-head attention
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length: 2 * length].zero_()
    qkv = F.linear(x, qkv_weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:  # cosine attention (V2)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        logit_scale = torch.clamp(logit_scale, max=math.log(100.0)).exp()
        attn = attn * logit_scale
    else:
        q = q * head_dim ** -0.5
        attn = q.matmul(k.transpose(-2, -1))
    attn = attn + relative_position_bias

    if sum(shift_size) > 0:  # attention mask between windows the shift brought together
        attn_mask = x.new_zeros((pad_H, pad_W))
        h_slices = ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None))
        w_slices = ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None))
        count = 0
        for h in h_slices:
            for w in w_slices:
                attn_mask[h[0]: h[1], w[0]: w[1]] = count
                count += 1
        attn_mask = attn_mask.view(pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1])
        attn_mask = attn_mask.permute(0, 2, 1, 3).reshape(num_windows, window_size[0] * window_size[1])
        attn_mask = attn_mask.unsqueeze(1) - attn_mask.unsqueeze(2)
        attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
        attn = attn.view(x.size(0) // num_windows, num_windows, num_heads, x.size(1), x.size(1))
        attn = attn + attn_mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, x.size(1), x.size(1))

    attn = F.softmax(attn, dim=-1)
    attn = F.dropout(attn, p=attention_dropout, training=training)

    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), inner)
    x = F.linear(x, proj_weight, proj_bias)
    x = F.dropout(x, p=dropout, training=training)

    # reverse windows
    x = x.view(B, pad_H // window_size[0], pad_W // window_size[1], window_size[0], window_size[1], width_out)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, width_out)
    if sum(shift_size) > 0:  # reverse cyclic shift
        x = torch.roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()  # unpad


# like torchvision's: a graph of the hard model has one call here, not shape-dependent Python
torch.fx.wrap("residual_cut_window_attention")


def _forward(self: ShiftedWindowAttention, x: torch.Tensor) -> torch.Tensor:
    return residual_cut_window_attention(
        x, self.qkv.weight, self.proj.weight, self.get_relative_position_bias(), self.window_size, self.num_heads,
        shift_size=self.shift_size, attention_dropout=self.attention_dropout, dropout=self.dropout,
        qkv_bias=self.qkv.bias, proj_bias=self.proj.bias, logit_scale=getattr(self, "logit_scale", None),
        training=self.training)


class ResidualCutWindowAttention(ShiftedWindowAttention):
    """``ShiftedWindowAttention`` reading ``qkv.weight.shape[1]`` features and writing
    ``proj.out_features`` (either may differ from the heads' width, ``qkv.out_features // 3``)."""

    forward = _forward


class ResidualCutWindowAttentionV2(ShiftedWindowAttentionV2):
    """``ShiftedWindowAttentionV2`` (cosine attention, continuous position bias), residual-cut likewise."""

    forward = _forward


class ResidualCutRelativeAttention(RelativePositionalMultiHeadAttention):
    """MaxViT's attention reading ``to_qkv.weight.shape[1]`` features and writing ``merge.out_features``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision 0.29's forward, op for op, but for the width the heads' output is reshaped to
        B, G, P, D = x.shape
        H, DH = self.n_heads, self.head_dim
        qkv = self.to_qkv(x)
        q, k, v = torch.chunk(qkv, 3, dim=-1)
        q = q.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        k = k.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        v = v.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        k = k * self.scale_factor
        dot_prod = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k)
        dot_prod = F.softmax(dot_prod + self.get_relative_positional_bias(), dim=-1)
        out = torch.einsum("B G H I J, B G H J D -> B G H I D", dot_prod, v)
        out = out.permute(0, 1, 3, 2, 4).reshape(B, G, P, H * DH)
        return self.merge(out)


# class -> (torchvision's class, its residual-cut subclass)
CLASSES = {cls: (original, cut) for original, cut in ((ShiftedWindowAttention, ResidualCutWindowAttention),
                                                       (ShiftedWindowAttentionV2, ResidualCutWindowAttentionV2),
                                                       (RelativePositionalMultiHeadAttention,
                                                        ResidualCutRelativeAttention))
           for cls in (original, cut)}


