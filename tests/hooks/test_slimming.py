"""Network slimming through the Pruner: the L1 subgradient lands on every norm scale inside the
user's own backward, drives the scales towards zero, and stops at finish."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunectl.errors import SpecError
from prunectl.hooks import NormSparsity, Pruner, one_shot


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(32, 3, 8, 8, generator=generator)
    return x, (x.mean(dim=(2, 3)).argmax(dim=1) + 1) % 4


def _scales_l1(strength: float, steps: int = 60) -> float:
    model = _cnn()
    pruner = Pruner(model, one_shot(0.0, at=99), slimming=strength)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _batch()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    pruner.finish()
    return float(model[1].weight.detach().abs().sum() + model[4].weight.detach().abs().sum())


def test_the_gradient_gains_s_times_sign_of_each_scale() -> None:
    plain, penalised = _cnn(), _cnn()
    with torch.no_grad():
        penalised[1].weight.copy_(torch.linspace(-1, 1, 16))
        plain[1].weight.copy_(penalised[1].weight)
    sparsity = NormSparsity(penalised, 0.01)
    x, y = _batch()
    for model in (plain, penalised):
        nn.functional.cross_entropy(model(x), y).backward()
    expected = plain[1].weight.grad + 0.01 * torch.sign(penalised[1].weight.detach())
    assert torch.allclose(penalised[1].weight.grad, expected, atol=1e-7, rtol=0)
    assert sparsity.penalty() == pytest.approx(0.01 * float(penalised[1].weight.abs().sum() + 16), rel=1e-6)
    sparsity.remove()
    penalised.zero_grad()
    plain.zero_grad()
    for model in (plain, penalised):
        nn.functional.cross_entropy(model(x), y).backward()
    assert torch.equal(penalised[1].weight.grad, plain[1].weight.grad)  # removed: plain gradients again


def test_sparsity_training_shrinks_the_scales() -> None:
    assert _scales_l1(0.1) < 0.8 * _scales_l1(0.0)


def test_a_model_without_norm_scales_is_refused() -> None:
    with pytest.raises(SpecError, match="no norm layer with a learnable scale"):
        Pruner(nn.Sequential(nn.Linear(3, 3)), one_shot(0.5), slimming=1e-4)
    with pytest.raises(SpecError, match="finite strength >= 0"):
        Pruner(_cnn(), one_shot(0.5), slimming=-1)
