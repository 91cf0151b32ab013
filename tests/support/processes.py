"""Real prunectl processes for the resume and torchrun tests: one environment, one way to compare bundles."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def one_thread_env() -> dict[str, str]:
    """What torchrun gives each process (one thread): the same kernels in every run compared."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def bundle_bytes(path: Path) -> dict[str, bytes]:
    """Every file under a bundle (``hf/`` included), by relative path."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_torchrun_writes_one_process_bytes(single_args: list[str], spread_args: list[str], single: Path,
                                             spread: Path) -> None:
    """``prunectl SINGLE_ARGS`` (with --micro-batches 2) in one process and ``torchrun
    --nproc-per-node 2 -m prunectl SPREAD_ARGS`` (gloo, CPU) write the same bytes."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    subprocess.run([str(BIN / "prunectl"), *single_args], check=True, cwd=ROOT, env=one_thread_env())
    ran = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "prunectl",
                          *spread_args], cwd=ROOT, env=one_thread_env(), capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert bundle_bytes(spread) == bundle_bytes(single)
