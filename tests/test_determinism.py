"""Determinism: the same checkpoint, spec and seed give byte-identical bundles.

Every fixture is pruned twice in this process and every file compared byte for byte; one
fixture also with ONNX, and once more in a fresh process (hash seeds, thread pools and import
order differ there), since that is where nondeterminism usually hides.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

import prunectl
from fixtures.make_checkpoints import FIXTURES


def _files(bundle: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(bundle.iterdir())}


def _assert_identical(a: Path, b: Path) -> None:
    files_a, files_b = _files(a), _files(b)
    assert sorted(files_a) == sorted(files_b)
    differing = [name for name in files_a if files_a[name] != files_b[name]]
    assert not differing, f"bundles differ in {differing}"


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_same_inputs_same_bytes(name, checkpoints, tmp_path):
    options = dict(spec=FIXTURES[name][2], seed=7)
    for run in ("a", "b"):
        prunectl.prune(checkpoints[name], prunectl.PruneOptions(output=tmp_path / run, **options))
    _assert_identical(tmp_path / "a", tmp_path / "b")


def test_same_bytes_across_processes_with_onnx(checkpoints, tmp_path):
    name = "dwsep"
    prunectl.prune(checkpoints[name], prunectl.PruneOptions(spec=FIXTURES[name][2], output=tmp_path / "here",
                                                            onnx=True, seed=3))
    subprocess.run([sys.executable, "-m", "prunectl", "prune", str(checkpoints[name]), "--spec",
                    str(FIXTURES[name][2]), "-o", str(tmp_path / "there"), "--onnx", "--seed", "3", "-q"],
                   cwd=ROOT, check=True)
    _assert_identical(tmp_path / "here", tmp_path / "there")
    assert "model.onnx" in _files(tmp_path / "here")


def test_seed_changes_only_what_it_seeds(checkpoints, tmp_path):
    """A different seed changes the verification inputs, not the pruned weights."""
    name = "small_mlp"
    for seed in (0, 1):
        prunectl.prune(checkpoints[name], prunectl.PruneOptions(spec=FIXTURES[name][2], output=tmp_path / str(seed),
                                                                seed=seed))
    assert _files(tmp_path / "0")["model.safetensors"] == _files(tmp_path / "1")["model.safetensors"]
