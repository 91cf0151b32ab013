"""``prunectl.prune(model, device=...)`` and ``prunectl.soft``: on the CPU the CLI's bundle bytes for
the same inputs; a device that is not here is a SpecError before the model is even copied."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from device_paths import take_the_device_paths
from torch.utils.data import DataLoader, TensorDataset

import prunectl
from fixtures.make_checkpoints import FIXTURES, make_model
from prunectl.cli import cli
from prunectl.errors import SpecError
from tests.support.helpers import manifest_without_source

MISSING = "mps" if torch.cuda.is_available() else "cuda"


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_device_cpu_in_process_gives_the_cli_bundle(device, checkpoints, tmp_path: Path) -> None:
    spec = FIXTURES["small_mlp"][2]
    assert CliRunner().invoke(cli, ["prune", str(checkpoints["small_mlp"]), "--spec", str(spec), "--rate", "0.3",
                                    "--device", "cpu", "-o", str(tmp_path / "cli"), "-q"]).exit_code == 0
    result = prunectl.prune(make_model("small_mlp"), spec=spec, rate=0.3, device=device)
    result.save(tmp_path / "api")
    for file in ("model.safetensors", "model.pt", "report.json"):
        assert (tmp_path / "api" / file).read_bytes() == (tmp_path / "cli" / file).read_bytes(), file
    assert manifest_without_source(tmp_path / "api") == manifest_without_source(tmp_path / "cli")


def test_a_users_loader_on_device_cpu_scores_as_without_it() -> None:
    model = make_model("small_mlp")
    generator = torch.Generator().manual_seed(1)
    loader = DataLoader(TensorDataset(torch.randn(32, 64, generator=generator),
                                      torch.randint(0, 10, (32,), generator=generator)), batch_size=8)
    spec = FIXTURES["small_mlp"][2]
    plain = prunectl.prune(model, spec=spec, criterion="taylor", data=loader)
    on_cpu = prunectl.prune(model, spec=spec, criterion="taylor", data=loader, device="cpu")
    assert plain.manifest.kept == on_cpu.manifest.kept
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), on_cpu.model.state_dict().values()))


def test_a_device_that_is_not_here_is_refused_first(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=f"^--device {MISSING}: .*not available here"):
        prunectl.prune(make_model("small_mlp"), spec=FIXTURES["small_mlp"][2], device=MISSING,
                       output=tmp_path / "out")
    with pytest.raises(SpecError, match="^--device: expected cpu, cuda, cuda:N or mps"):
        prunectl.prune(make_model("small_mlp"), spec=FIXTURES["small_mlp"][2], device="gpu0")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_model_is_pruned_on_cuda_and_left_there(checkpoints, tmp_path: Path) -> None:
    spec = FIXTURES["small_mlp"][2]
    model = make_model("small_mlp").cuda()
    result = prunectl.prune(model, spec=spec, rate=0.3, device="cuda")
    assert next(model.parameters()).device.type == "cuda"  # the caller's model stays where it was
    assert next(result.model.parameters()).device.type == "cpu"  # the result is the bundle's CPU model
    result.save(tmp_path / "api")
    assert CliRunner().invoke(cli, ["prune", str(checkpoints["small_mlp"]), "--spec", str(spec), "--rate", "0.3",
                                    "--device", "cuda", "-o", str(tmp_path / "cli"), "-q"]).exit_code == 0
    weights = [(tmp_path / where / "model.safetensors").read_bytes() for where in ("api", "cli")]
    assert weights[0] == weights[1]
    assert prunectl.soft(model, result.plan).fc1.weight.device.type == "cuda"


@pytest.mark.parametrize("criterion", ["taylor", "activation", "thinet", "wanda_sp", "apoz"])
def test_the_device_paths_taken_on_the_cpu_change_nothing(criterion: str, monkeypatch) -> None:
    generator = torch.Generator().manual_seed(1)
    loader = DataLoader(TensorDataset(torch.randn(32, 64, generator=generator),
                                      torch.randint(0, 10, (32,), generator=generator)), batch_size=8)
    spec = FIXTURES["small_mlp"][2]
    plain = prunectl.prune(make_model("small_mlp"), spec=spec, criterion=criterion, data=loader)
    take_the_device_paths(monkeypatch)
    moved = prunectl.prune(make_model("small_mlp"), spec=spec, criterion=criterion, data=loader, device="cpu")
    assert moved.manifest.kept == plain.manifest.kept and moved.manifest.extra == plain.manifest.extra
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), moved.model.state_dict().values()))
