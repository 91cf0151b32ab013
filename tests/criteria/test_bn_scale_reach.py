"""bn_scale scores a channel from the norm its channels reach: through depthwise convs
(StudentNet's pointwise -> depthwise -> BatchNorm, seed 003), and a layer that reaches none
(vgg11_bn's classifier, a pointwise conv before pooling) is left unpruned with a warning that
names it, instead of failing the run."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

import prunectl


class StudentNet(nn.Module):
    """Seed 003's block pattern, small: each pointwise conv's channels pass the next block's
    depthwise conv before they meet a BatchNorm; the last one meets none (pooling, then fc)."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU6(), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8), nn.ReLU6(),
                          nn.Conv2d(8, 16, 1), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
                          nn.Conv2d(16, 32, 1)),
            nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.cnn(x).flatten(1))


def _student() -> StudentNet:
    torch.manual_seed(0)
    model = StudentNet().eval()
    with torch.no_grad():  # distinct scales, so the kept channels say which BatchNorm was read
        model.cnn[2][1].weight.copy_(torch.linspace(-1, 1, 16) + 0.01)
    return model


def _groups(result: prunectl.PruneResult) -> list[dict]:
    return result.report["groups"]


def test_a_pointwise_conv_is_scored_from_the_batchnorm_after_the_next_depthwise_conv() -> None:
    model = _student()
    with pytest.warns(UserWarning, match=r"bn_scale.*1 group.*cnn\.2\.3"):
        result = prunectl.prune(model, example_inputs=torch.randn(1, 3, 16, 16), rate=0.5, criterion="bn_scale")
    # cnn.1.3's 16 channels live with cnn.2.0 (depthwise) and cnn.2.1: the 8 largest |gamma| of cnn.2.1 stay
    gamma = model.cnn[2][1].weight.detach().abs()
    expected = sorted(torch.argsort(gamma, descending=True, stable=True)[:8].tolist())
    assert result.model.cnn[1][3].out_channels == 8 and result.model.cnn[2][1].num_features == 8
    assert torch.equal(result.model.cnn[2][1].weight.detach(), model.cnn[2][1].weight.detach()[expected])
    assert result.plan["cnn.1.3"].out.tolist() == expected
    # the last pointwise conv reaches only pooling and fc: left whole, and report.json says why
    assert result.model.cnn[2][3].out_channels == 32
    unscored = [g for g in _groups(result) if "cnn.2.3" in g["layers"]]
    assert unscored[0]["kept"] == 32 and "reaches no affine norm layer" in unscored[0]["pinned_by"][0]
    x = torch.randn(4, 3, 16, 16)
    assert torch.allclose(result.model(x), prunectl.soft(model, result.plan)(x), atol=1e-5)


def test_vgg11_bn_prunes_its_features_and_keeps_the_classifier_whole(tmp_path) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.vgg11_bn(num_classes=10).eval()
    with pytest.warns(UserWarning, match=r"classifier\.0.*classifier\.3"):
        result = prunectl.prune(model, example_inputs=torch.randn(1, 3, 32, 32), rate=0.5, criterion="bn_scale",
                                model="torchvision:vgg11_bn", factory_args={"num_classes": 10})
    assert [m.out_channels for m in result.model.features if isinstance(m, nn.Conv2d)] == \
        [32, 64, 128, 128, 256, 256, 256, 256]
    assert result.model.classifier[0].out_features == 4096 and result.model.classifier[3].out_features == 4096
    assert result.model.classifier[0].in_features == 256 * 49
    result.save(tmp_path / "bundle")
    report = json.loads((tmp_path / "bundle" / "report.json").read_text())
    pinned = [g for g in report["groups"] if g.get("pinned_by")]
    assert {g["layers"][0] for g in pinned} >= {"classifier.0", "classifier.3"}
