"""Pruning a model you hold in memory: your own loader and criterion, the soft model, a bundle.

Run: python docs/examples/in_process.py OUT_DIR  (tests/test_in_process_example.py runs it)
"""
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import resnet18

import prunectl

torch.manual_seed(0)
model = resnet18(num_classes=10).eval()  # your trained model
images, labels = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
loader = DataLoader(TensorDataset(images, labels), batch_size=16)

# Taylor importance from your own loader (cross-entropy: the targets are class indices)
# model= and factory_args: how prunectl.load rebuilds it without pickle
result = prunectl.prune(model, example_inputs=images[:1], rate=0.5, criterion="taylor", data=loader,
                        model="torchvision:resnet18", factory_args={"num_classes": 10})
masked = prunectl.soft(model, result.plan)  # same shapes, the cut channels zeroed
with torch.no_grad():
    gap = float((masked(images) - result.model(images)).abs().max())
before, after = result.report["params"]["before"], result.report["params"]["after"]
print(f"params {before} -> {after}, soft vs hard max diff {gap:.1e}")

bundle = result.save(sys.argv[1] if len(sys.argv) > 1 else "in-process-out")
reloaded = prunectl.load(bundle)  # rebuilt from the manifest and safetensors, no pickle
with torch.no_grad():
    print("reloaded equals the pruned model:", torch.equal(reloaded(images), result.model(images)))
