"""The float64 proof's machinery (verification/precision.py): exact round trip, held downcasts, and
the grouped convolution it computes itself."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from prunectl.measure.size import count_macs
from prunectl.verification.precision import _grouped_conv2d, float64_proof


class CastsToFloat32(nn.Module):
    """A norm that computes its statistic "in float32", as Llama's RMSNorm does."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(8) + 0.5)
        self.register_buffer("scale", torch.full((8,), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        hidden = x.to(torch.float32)
        hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.weight * self.scale * hidden.to(dtype) + torch.zeros(8, dtype=torch.float16).float()


def test_the_model_is_widened_for_the_block_and_put_back_bit_for_bit() -> None:
    model = nn.Sequential(nn.Linear(8, 8), CastsToFloat32())
    model[1].tied = model[0].weight  # a plain attribute referring to a parameter
    before = {name: tensor for name, tensor in model.state_dict(keep_vars=True).items()}
    copies = {name: tensor.detach().clone() for name, tensor in before.items()}
    with float64_proof(model):
        assert all(t.dtype == torch.float64 for t in model.state_dict().values())
        out = model(torch.randn(2, 8, dtype=torch.float64))
        assert out.dtype == torch.float64  # the model's own .to(float32) and float16 constant were held
    after = model.state_dict(keep_vars=True)
    assert all(after[name] is tensor for name, tensor in before.items())  # the very same tensor objects
    assert all(torch.equal(after[name], copies[name]) and after[name].dtype == torch.float32 for name in copies)
    assert torch.get_default_dtype() == torch.float32


def test_tied_parameters_stay_tied_in_float64() -> None:
    embedding, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight
    model = nn.ModuleDict({"embedding": embedding, "head": head})
    with float64_proof(model):
        assert model["head"].weight is model["embedding"].weight and model["head"].weight.dtype == torch.float64


@pytest.mark.parametrize("channels, out, groups, kernel, stride, padding, dilation", [
    (12, 12, 12, 5, 1, 2, 1), (8, 16, 4, 3, 2, 1, 1), (6, 6, 6, 3, 1, 2, 2), (6, 12, 6, 3, (2, 1), (1, 0), 1)])
def test_grouped_conv2d_is_the_convolution(channels, out, groups, kernel, stride, padding, dilation) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, channels, 9, 11, dtype=torch.float64)
    weight = torch.randn(out, channels // groups, kernel, kernel, dtype=torch.float64)
    bias = torch.randn(out, dtype=torch.float64)
    expected = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    got = _grouped_conv2d(x, weight, bias, stride, padding, dilation, groups)
    assert got.shape == expected.shape and torch.allclose(got, expected, rtol=0, atol=1e-12)
    assert _grouped_conv2d(x, weight[:, :channels], None, 1, 0, 1, 1) is None  # not grouped: torch's own


def test_the_mac_count_is_the_same_in_the_proof() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Conv2d(8, 16, 1, groups=2)).eval()
    x = torch.randn(1, 3, 16, 16)
    plain = count_macs(model, x)
    with float64_proof(model):
        assert count_macs(model, x.double()) == plain


def test_an_eval_cache_of_tensors_is_emptied_around_the_proof() -> None:
    # timm's EfficientFormer/LeViT attention keeps attention_biases[:, idxs] in a dict filled at the
    # first eval forward: one filled in the proof was float64 in the float32 runs after it ("expected
    # scalar type Float but found Double"), one filled before it held values the proof never saw
    efficientformer = pytest.importorskip("timm.models.efficientformer")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), efficientformer.Attention(16, key_dim=8, num_heads=2, attn_ratio=1,
                                                                      resolution=2), nn.Linear(16, 2)).eval()
    x = torch.randn(1, 4, 3)
    with torch.no_grad():
        with float64_proof(model):
            wide = model(x.double())  # the first eval forward: fills the cache inside the proof
        assert torch.allclose(model(x), wide.float(), atol=1e-5)  # float32 again, no float64 entry left
        model[1].attention_biases.normal_()  # what masking does to a parameter the cache copied
        expected = model[1].attention_biases.detach().double()
        with float64_proof(model):
            assert torch.equal(model[1].get_attention_biases(x.device), expected[:, model[1].attention_bias_idxs])
    assert model[1].training is False and not model.training
