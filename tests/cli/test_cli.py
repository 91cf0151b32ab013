"""The command line: the exit codes of docs/formats.md, one-line messages, nothing left half-written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import FIXTURE_NAMES, ROOT, assert_clean_failure, invoke

import prunectl
from prunectl import __version__
from prunectl.cli import cli

SPECS = ROOT / "fixtures" / "specs"




def test_version_and_help_with_examples() -> None:
    assert invoke("--version").output.strip() == f"prunectl, version {__version__}"
    for command in ("prune", "verify", "export", "info"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Example: prunectl " + command in result.output


def test_quiet_prints_nothing(checkpoints, tmp_path: Path) -> None:
    result = invoke("prune", checkpoints["small_mlp"], "--spec", SPECS / "small_mlp.json", "-o", tmp_path / "o", "-q")
    assert result.exit_code == 0 and result.output == ""


def test_summary_shows_widths_totals_and_files(checkpoints, tmp_path: Path) -> None:
    result = invoke("prune", checkpoints["small_mlp"], "--spec", SPECS / "small_mlp.json", "-o", tmp_path / "o")
    assert result.exit_code == 0
    for fragment in ("fc1", "64", "32", "params", "MACs", "soft vs hard", "model.safetensors"):
        assert fragment in result.output


@pytest.mark.parametrize("case, code, fragments", [
    ("missing_checkpoint", 5, ["no such checkpoint file"]),
    ("truncated_checkpoint", 5, ["not a readable PyTorch checkpoint"]),
    ("text_checkpoint", 5, ["not a readable PyTorch checkpoint"]),
    ("bad_safetensors", 5, ["not a readable safetensors file"]),
    ("wrong_model_weights", 5, ["does not fit the model", "shape mismatch"]),
    ("pickled_module", 5, ["refusing to unpickle", "--trust-pickle"]),
    ("unknown_layer", 3, ["layers.conv9", "no module of that name"]),
    ("factory_not_found", 3, ["NoSuchNet"]),
    ("factory_not_module", 3, ["os:system", "refused"]),
    ("rate_out_of_range", 3, ["--rate", "[0, 1)"]),
    ("unknown_criterion", 3, ["unknown criterion 'fgpm'", "available: ", "l1", "l2"]),
    ("no_spec", 3, ["a state_dict needs a model"]),
    ("bad_input_shape", 3, ["does not run on input [1, 3, 5, 5]"]),
    ("output_is_file", 3, ["exists and is not a directory"]),
    ("output_under_a_file", 3, ["is not a directory"]),
    ("soft_hard_mismatch", 4, ["first diverging layer"]),
])
def test_bad_input_exit_codes(case: str, code: int, fragments: list[str], checkpoints, tmp_path: Path) -> None:
    ckpt, spec, out = checkpoints["alexnet"], SPECS / "alexnet.json", tmp_path / "out"
    extra: list[str] = []
    if case == "missing_checkpoint":
        ckpt = tmp_path / "nope.pt"
    elif case == "truncated_checkpoint":
        ckpt = tmp_path / "cut.pt"
        ckpt.write_bytes(checkpoints["alexnet"].read_bytes()[:5000])
    elif case == "text_checkpoint":
        ckpt = tmp_path / "notes.pt"
        ckpt.write_text("these are not weights")
    elif case == "bad_safetensors":
        ckpt = tmp_path / "bad.safetensors"
        ckpt.write_bytes(b"\xff" * 64)
    elif case == "wrong_model_weights":
        ckpt = checkpoints["vgg11_bn"]
    elif case == "pickled_module":
        from fixtures.models import AlexNet

        ckpt = tmp_path / "whole.pt"
        torch.save(AlexNet(), ckpt)
    elif case in ("unknown_layer", "factory_not_found", "factory_not_module"):
        spec = SPECS / "invalid" / f"{case.replace('unknown_layer', 'unknown_layer_name')}.json"
    elif case == "rate_out_of_range":
        extra = ["--rate", "1.5"]
    elif case == "unknown_criterion":
        extra = ["--criterion", "fgpm"]
    elif case == "no_spec":
        spec = None
    elif case == "bad_input_shape":
        extra = ["--input-shape", "1,3,5,5"]
    elif case == "output_is_file":
        out.write_text("keep me")
    elif case == "output_under_a_file":
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        out = tmp_path / "notes.txt" / "sub" / "out"
    elif case == "soft_hard_mismatch":
        data = json.loads((SPECS / "vgg11_bn.json").read_text())
        del data["layers"]["bn3"]  # the spec forgets a norm layer
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps(data))
        ckpt = checkpoints["vgg11_bn"]
    args = ["prune", ckpt, *(["--spec", spec] if spec else []), "-o", out, *extra]
    result = invoke(*args)
    if case == "output_is_file":
        assert_clean_failure(result, code, *fragments)
        assert out.read_text() == "keep me"
    else:
        assert_clean_failure(result, code, *fragments, out=out)


def test_trust_pickle_accepts_a_whole_module(tmp_path: Path) -> None:
    from fixtures.models import SmallMLP

    torch.save(SmallMLP(), tmp_path / "whole.pt")
    result = invoke("prune", tmp_path / "whole.pt", "--spec", SPECS / "small_mlp.json", "--trust-pickle",
                    "-o", tmp_path / "o", "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["rebuild"]["factory"] == "fixtures.models:SmallMLP"


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["prune", str(tmp_path / "nope.pt"), "--spec", str(SPECS / "alexnet.json"),
                                      "--debug"])
    assert result.exit_code != 0 and result.exception is not None


def test_verify_and_export_errors(checkpoints, tmp_path: Path) -> None:
    assert_clean_failure(invoke("verify", tmp_path), 5, "not a prunectl bundle")
    out = tmp_path / "b"
    assert invoke("prune", checkpoints["small_mlp"], "--spec", SPECS / "small_mlp.json", "-o", out, "-q").exit_code == 0
    weights = bytearray((out / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(weights))
    assert_clean_failure(invoke("verify", out), 4, "model.safetensors", "sha256")
    assert_clean_failure(invoke("export", out, "--onnx"), 4, "model.safetensors")
    assert invoke("export", out).exit_code == 2  # usage: nothing to export


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "prunectl", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_real_subprocess_prune(name: str, checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    pruned = _run("prune", checkpoints[name], "--spec", SPECS / f"{name}.json", "-o", out, "--onnx", "-q")
    assert pruned.returncode == 0 and pruned.stdout == "", pruned.stderr
    assert prunectl.verify(out)["onnx_max_abs"] <= 1e-4


def test_real_subprocess_every_command(checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    pruned = _run("prune", checkpoints["conv1d"], "--spec", SPECS / "conv1d.json", "-o", out, "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["output"] == str(out)
    assert _run("export", out, "--onnx", "-q").returncode == 0
    verified = _run("verify", out, "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["onnx_max_abs"] <= 1e-4
    info = _run("info", out, "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["params"] > 0
    failed = _run("prune", tmp_path / "missing.pt", "--spec", SPECS / "conv1d.json")
    assert failed.returncode == 5 and failed.stderr.startswith("error: ") and "Traceback" not in failed.stderr


def test_trust_pickle_imports_classes_of_the_current_project(checkpoints, tmp_path: Path) -> None:
    """A pickled module whose class lives in the directory the command runs in (no PYTHONPATH)."""
    project = tmp_path / "project"
    (project / "mynets").mkdir(parents=True)
    (project / "mynets" / "__init__.py").write_text(
        "import torch.nn as nn\n\nclass Tiny(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc1 = nn.Linear(8, 16)\n        self.fc2 = nn.Linear(16, 4)\n\n"
        "    def forward(self, x):\n        return self.fc2(self.fc1(x).relu())\n")
    save = ("import torch, sys; sys.path.insert(0, '.'); from mynets import Tiny; "
            "torch.manual_seed(0); torch.save(Tiny(), 'whole.pt')")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", save], cwd=project, check=True, env=env)
    done = subprocess.run([sys.executable, "-m", "prunectl", "prune", "whole.pt", "--trust-pickle",
                           "--input-shape", "1,8", "--rate", "0.5", "-o", "nested/dirs/out", "-q"],
                          cwd=project, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((project / "nested" / "dirs" / "out" / "manifest.json").read_text())
    assert manifest["rebuild"]["factory"] == "mynets:Tiny"
    assert manifest["kept"]["fc1"] and len(manifest["kept"]["fc1"]) == 8

