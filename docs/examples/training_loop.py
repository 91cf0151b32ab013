"""Pruning inside your own training loop: AGP to 80 % zeros, then lottery-ticket rounds.

Run: python docs/examples/training_loop.py  (tests/hooks/test_examples.py runs it)
"""
import torch
import torch.nn as nn

import prunectl
from prunectl.hooks import agp, lottery

torch.manual_seed(0)
x = torch.randn(256, 16)
y = (x[:, :4] * 3).argmax(dim=1)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer) -> float:
    for start in range(0, len(x), 32):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x[start:start + 32]), y[start:start + 32])
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def accuracy(model: nn.Module) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def train_and_prune(schedule: list, epochs: int, **options) -> tuple[float, float]:
    """Your usual loop with two added lines: build a Pruner, step it after each epoch."""
    model = make_model()
    pruner = prunectl.Pruner(model, schedule, **options)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(epochs):
        train_epoch(model, optimizer)
        pruner.step(epoch)
    pruner.finish()
    return pruner.sparsity()["total"], accuracy(model)


# gradual pruning (Zhu & Gupta): the sparsity follows a cubic from epoch 2 to epoch 8
cut, acc = train_and_prune(agp(0.8, start=2, end=8), 12, global_ranking=True)
print(f"AGP: {cut:.0%} of the weights cut, accuracy {acc:.3f}")

# lottery ticket (Frankle & Carbin): 3 rounds of 40 %, the survivors rewound to their initial values
cut, acc = train_and_prune(lottery(0.4, rounds=3, every=4, start=3), 16)
print(f"lottery ticket: {cut:.0%} of the weights cut, accuracy {acc:.3f}")
