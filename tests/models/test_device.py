"""``--device`` parsed and checked once (models/device.py): the forms it takes, what is refused and
how, and the helpers that are no-ops on the CPU (so CPU runs are what they were)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunectl.errors import SpecError
from prunectl.models.device import (
    CPU,
    InputsOn,
    device_name,
    device_of,
    fed_on,
    on_device,
    resolve_device,
    to_device,
)

NO_CUDA = not torch.cuda.is_available()
NO_MPS = not (torch.backends.mps.is_built() and torch.backends.mps.is_available())


@pytest.mark.parametrize("given", ["cpu", "CPU", " cpu ", "cpu:0", None, torch.device("cpu")])
def test_the_cpu_in_every_form(given) -> None:
    assert resolve_device(given) == CPU


@pytest.mark.parametrize("given, fragment", [
    ("nonsense", "expected cpu, cuda, cuda:N or mps, got 'nonsense'"),
    ("cuda:x", "expected cpu, cuda, cuda:N or mps"),
    ("gpu", "expected cpu, cuda, cuda:N or mps"),
    ("", "expected cpu, cuda, cuda:N or mps"),
    ("cpu:1", "there is one CPU device"),
    (3, "expected cpu, cuda, cuda:N or mps, got 3"),
])
def test_what_is_not_a_device_is_a_spec_error_naming_the_option(given, fragment: str) -> None:
    with pytest.raises(SpecError, match="^--device") as caught:
        resolve_device(given)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 3


@pytest.mark.skipif(not NO_CUDA, reason="CUDA is here")
@pytest.mark.parametrize("given", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_says_so(given: str) -> None:
    with pytest.raises(SpecError, match=f"^--device {given}: CUDA is not available here"):
        resolve_device(given)


@pytest.mark.skipif(not NO_MPS, reason="MPS is here")
def test_mps_without_mps_says_so() -> None:
    with pytest.raises(SpecError, match="^--device mps: MPS is not available here"):
        resolve_device("mps")


def test_a_gpu_index_is_checked_against_the_count(monkeypatch) -> None:
    # two GPUs, as torch would report them: nothing here touches a real GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert device_name(resolve_device("cuda:1")) == "cuda:1"
    with pytest.raises(SpecError, match=r"^--device cuda:3: there are 2 CUDA devices here \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:3")
    with pytest.raises(SpecError, match="^Pruner: device cuda:2"):
        resolve_device("cuda:2", "Pruner: device")


def test_on_the_cpu_the_helpers_change_nothing() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    params = [id(p) for p in model.parameters()]
    with on_device(model, CPU) as same:
        assert same is model
    with on_device(model, None):
        pass
    assert [id(p) for p in model.parameters()] == params
    x = torch.randn(5, 4)
    assert to_device(x, CPU) is x and to_device((x, [x]), None)[0] is x
    assert fed_on(model, CPU) is model


def test_inputs_on_feeds_the_model_and_returns_to_the_callers_device() -> None:
    model = nn.Linear(4, 2)
    wrapped = InputsOn(model, CPU)
    x = torch.randn(3, 4)
    assert torch.equal(wrapped(x), model(x))
    assert list(wrapped.parameters()) == list(model.parameters())  # an optimizer over it trains the model
    wrapped.train(False)
    assert not model.training


def test_device_of_is_the_parameters_device() -> None:
    assert device_of(nn.ReLU()) == CPU  # nothing to go by: the CPU
    assert device_of(nn.Linear(2, 2)) == CPU
    assert device_of(nn.Linear(2, 2, device="meta")).type == "meta"
    assert device_of(nn.BatchNorm1d(3).requires_grad_(False)) == CPU


@pytest.mark.skipif(NO_CUDA, reason="needs CUDA")
def test_on_device_moves_there_and_back_bit_for_bit() -> None:
    model = nn.Linear(8, 4)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    with on_device(model, "cuda"):
        assert device_of(model).type == "cuda"
        assert fed_on(model, torch.device("cuda"))(torch.randn(2, 8)).device == CPU
    assert device_of(model) == CPU and [id(p) for p in model.parameters()] == params
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
