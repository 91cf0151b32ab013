"""Automatic per-layer widths for a model you hold in memory, with your own evaluate and train.

CAC's accuracy-controlled search (Fujitsu CAC's ``auto_prune(model, ..., acc_control, train_loader,
val_loader, criterion)``): every accepted step stays within ``max_drop`` accuracy points of the
original; NetAdapt's target mode with ``target_params=`` / ``target_macs=``.

Run: python docs/examples/auto_in_process.py OUT_DIR  (tests/test_auto_in_process_example.py runs it)
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from example_models import MLP  # beside this file: the bundle names the class by import path
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

import prunectl

torch.manual_seed(0)
digits = load_digits()
images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
labels = torch.tensor(digits.target)
order = torch.randperm(len(labels))
train_set = TensorDataset(images[order[:1200]], labels[order[:1200]])
val_images, val_labels = images[order[1200:]], labels[order[1200:]]
train_loader = DataLoader(train_set, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
val_loader = DataLoader(TensorDataset(val_images, val_labels), batch_size=128)


def train(model: nn.Module, epochs: int) -> None:
    """Your training loop; prunectl calls it with epochs=1 and evaluates in between."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for x, y in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()


def evaluate(model: nn.Module) -> float:
    """Validation accuracy in percent (max_drop counts in the same points)."""
    return 100.0 * float((model(val_images).argmax(1) == val_labels).float().mean())


model = MLP()
train(model, 10)  # your trained model
# factory_args: the constructor arguments prunectl.load rebuilds the pruned model with (its widths
# are rewritten into them)
result = prunectl.auto(model, evaluate=evaluate, train=train, val_loader=val_loader, train_loader=train_loader,
                       example_inputs=val_images[:1], factory_args={"hidden1": 128, "hidden2": 64},
                       max_drop=1.0, epochs=2, max_steps=4)
first, last = result.history[0], result.history[-1]
print(f"params {first['params']} -> {last['params']}, validation {first['accuracy']:.2f} -> {last['accuracy']:.2f}"
      f" ({len(result.history) - 1} steps accepted; {result.stopped_because})")

bundle = result.save(sys.argv[1] if len(sys.argv) > 1 else "auto-in-process-out")
reloaded = prunectl.load(bundle)  # MLP(**args) from the manifest, weights from safetensors, no pickle
with torch.no_grad():
    print("reloaded equals the searched model:", torch.equal(reloaded(val_images), result.model(val_images)))
