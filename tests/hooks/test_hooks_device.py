"""The training hooks work where the model is: masks on the parameters' own device, the structured
pipeline on the model's device by default (``device=`` to say otherwise), never an assumed CUDA."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunectl.errors import SpecError
from prunectl.hooks import Pruner, one_shot
from prunectl.hooks.structured import pipeline_device
from prunectl.models.device import CPU

pytest.importorskip("prunectl_digits")
from prunectl_digits.models import DigitsCNN  # noqa: E402
from prunectl_digits.task import splits  # noqa: E402

MISSING = "mps" if torch.cuda.is_available() else "cuda"


def test_unstructured_masks_are_made_on_the_parameters_device_meta_included() -> None:
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2)).to("meta")
    pruner = Pruner(model, one_shot(0.5))
    assert pruner.targets and all(module.weight.device.type == "meta" for module, _ in pruner.targets.values())
    # torch's own l1 masks need values; the default device of everything the Pruner made is the model's
    assert pipeline_device(model) == CPU  # a meta model's pipeline would run on the CPU, not on a guess


def test_the_structured_pipeline_runs_on_the_models_device_by_default() -> None:
    assert pipeline_device(DigitsCNN()) == CPU
    torch.manual_seed(0)
    model = DigitsCNN()
    pruner = Pruner(model, one_shot(0.5), mode="structured", example_inputs=splits()["train"][0][:2])
    assert pruner.channels.device is None  # decided at each event, from the model's parameters
    pruner.step(0)
    masks = [buffer for name, buffer in model.named_buffers() if name.endswith("_mask")]
    assert masks and all(mask.device == CPU for mask in masks)
    assert pruner.finish().conv1.out_channels == 8


def test_device_is_checked_when_the_pruner_is_made() -> None:
    example = splits()["train"][0][:2]
    with pytest.raises(SpecError, match=f"^Pruner: device {MISSING}: .*not available here"):
        Pruner(DigitsCNN(), one_shot(0.5), mode="structured", example_inputs=example, device=MISSING)
    with pytest.raises(SpecError, match="device are for mode='structured'"):
        Pruner(DigitsCNN(), one_shot(0.5), device="cpu")
    with pytest.raises(SpecError, match="'device' is set by the Pruner itself"):
        Pruner(DigitsCNN(), one_shot(0.5), mode="structured", example_inputs=example,
               prune_options={"device": "cpu"})
    assert Pruner(DigitsCNN(), one_shot(0.5), mode="structured", example_inputs=example,
                  device=torch.device("cpu")).channels.device == CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_model_gets_cuda_masks_and_a_cpu_result() -> None:
    torch.manual_seed(0)
    model = DigitsCNN().cuda()
    pruner = Pruner(model, one_shot(0.5), mode="structured", example_inputs=splits()["train"][0][:2])
    pruner.step(0)
    assert pipeline_device(model).type == "cuda"
    assert all(buffer.device.type == "cuda" for name, buffer in model.named_buffers() if name.endswith("_mask"))
    small = pruner.finish()
    assert next(small.parameters()).device.type == "cpu" and small.conv1.out_channels == 8
