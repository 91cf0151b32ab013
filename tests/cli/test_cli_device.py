"""``--device``: CPU bundles are byte for byte what they were; a device that is not here is one line,
exit 3 (docs/formats.md) and nothing written, for every command that takes it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, assert_clean_failure, invoke

import prunectl

SPECS = ROOT / "fixtures" / "specs"
NO_CUDA = not torch.cuda.is_available()
MISSING = "mps" if torch.cuda.is_available() else "cuda"  # a device this machine lacks (CPU CI: cuda)


def _files(bundle: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(bundle.iterdir()) if path.is_file()}


@pytest.fixture()
def calibration(tmp_path: Path) -> Path:
    """Inputs and targets for small_mlp's data-driven criteria."""
    generator = torch.Generator().manual_seed(0)
    path = tmp_path / "calib.pt"
    torch.save({"inputs": torch.randn(32, 64, generator=generator),
                "targets": torch.randint(0, 10, (32,), generator=generator)}, path)
    return path


@pytest.mark.parametrize("criterion", ["l1", "taylor", "activation"])
def test_device_cpu_gives_the_bundle_of_no_device_byte_for_byte(criterion: str, checkpoints, calibration,
                                                                 tmp_path: Path) -> None:
    args = ["prune", checkpoints["small_mlp"], "--spec", SPECS / "small_mlp.json", "--criterion", criterion, "-q"]
    if criterion != "l1":
        args += ["--data", calibration]
    assert invoke(*args, "-o", tmp_path / "plain").exit_code == 0
    assert invoke(*args, "--device", "cpu", "-o", tmp_path / "cpu").exit_code == 0
    assert _files(tmp_path / "plain") == _files(tmp_path / "cpu")
    assert "device" not in json.loads((tmp_path / "cpu" / "manifest.json").read_text())


@pytest.mark.parametrize("device, fragments", [
    (MISSING, [f"--device {MISSING}: ", "not available here", "use --device cpu"]),
    ("nonsense", ["--device: expected cpu, cuda, cuda:N or mps, got 'nonsense'"]),
    ("cpu:2", ["--device cpu:2: there is one CPU device"]),
])
def test_prune_on_a_device_that_is_not_here_is_exit_3_and_writes_nothing(device: str, fragments: list[str],
                                                                          checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("prune", checkpoints["small_mlp"], "--spec", SPECS / "small_mlp.json", "--device", device,
                    "-o", out)
    assert_clean_failure(result, 3, *fragments)
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_auto_finetune_and_eval_refuse_it_the_same_way(checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "out"
    auto = invoke("auto", checkpoints["small_mlp"], "--spec", SPECS / "small_mlp.json", "--task", "digits",
                  "--device", MISSING, "-o", out)
    assert_clean_failure(auto, 3, f"--device {MISSING}: ", "not available here")
    assert not out.exists() and not list(tmp_path.glob("*auto-state*"))
    bundle = tmp_path / "bundle"
    assert invoke("prune", checkpoints["small_mlp"], "--spec", SPECS / "small_mlp.json", "-o", bundle,
                  "-q").exit_code == 0
    before = _files(bundle)
    tuned = invoke("finetune", bundle, "--task", "digits", "--device", "nonsense", "-o", out)
    assert_clean_failure(tuned, 3, "--device: expected cpu, cuda, cuda:N or mps")
    distilled = invoke("finetune", bundle, "--distill", "--data", tmp_path / "x.txt", "--steps", "1",
                       "--device", MISSING, "-o", out)
    assert_clean_failure(distilled, 3, f"--device {MISSING}: ")
    assert not out.exists() and _files(bundle) == before  # the source bundle is not touched either
    text = tmp_path / "x.txt"
    text.write_text("some words " * 50)
    assert_clean_failure(invoke("eval", bundle, "--data", text, "--device", MISSING), 3, f"--device {MISSING}: ")


def test_the_help_of_every_command_names_the_option() -> None:
    for command in ("prune", "auto", "finetune", "eval"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "--device" in result.output and "cpu|cuda|cuda:N|mps" in result.output


def test_a_real_subprocess_refuses_a_missing_device(checkpoints, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "prunectl", "prune", str(checkpoints["small_mlp"]), "--spec",
                           str(SPECS / "small_mlp.json"), "--device", MISSING, "-o", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: --device {MISSING}: ")
    assert not out.exists()


@pytest.mark.skipif(NO_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("criterion", ["l1", "taylor"])
def test_prune_on_cuda_gives_the_cpu_cut_and_a_proof_made_there(criterion: str, checkpoints, calibration,
                                                                 tmp_path: Path) -> None:
    args = ["prune", checkpoints["small_mlp"], "--spec", SPECS / "small_mlp.json", "--criterion", criterion, "-q"]
    if criterion != "l1":
        args += ["--data", calibration]
    assert invoke(*args, "-o", tmp_path / "cpu").exit_code == 0
    result = invoke(*args, "--device", "cuda", "-o", tmp_path / "cuda")
    assert result.exit_code == 0, result.output
    cpu, cuda = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("cpu", "cuda"))
    assert cuda["device"] == "cuda:0" and cuda["verify"]["precision"] == "float64"
    assert cuda["verify"]["soft_vs_hard_max_abs"] <= 1e-9 * max(1.0, cuda["verify"]["reference_max_abs"])
    if criterion == "l1":  # weights scored on the CPU: the same cut, the same weights, byte for byte
        assert cpu["kept"] == cuda["kept"]
        assert (tmp_path / "cpu" / "model.safetensors").read_bytes() == \
            (tmp_path / "cuda" / "model.safetensors").read_bytes()
    assert prunectl.verify(tmp_path / "cuda")["forward"] == "ok"
    # the same device twice: the same bytes
    assert invoke(*args, "--device", "cuda", "-o", tmp_path / "again").exit_code == 0
    assert _files(tmp_path / "cuda") == _files(tmp_path / "again")
