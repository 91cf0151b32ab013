"""finetune --distill on a tiny decoder, as real processes: SIGKILLed mid-run and run again, it
ends with the bytes of an uninterrupted run; a changed argument on resume is one line naming it
(exit 3), the state untouched; torchrun with 2 processes (gloo, CPU) writes the bytes of one
process with --micro-batches 2."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from helpers import ROOT, assert_clean_failure, invoke  # noqa: E402

import prunectl  # noqa: E402
from prunectl.training.run_state import load_state  # noqa: E402
from tests.support.text_models import llama_folder, words  # noqa: E402

BIN = Path(sys.executable).parent
STEPS = 40


def _pruned(tmp_path: Path) -> tuple[Path, Path]:
    folder = llama_folder(tmp_path / "original")
    text = tmp_path / "calib.txt"
    text.write_text(words(1200), encoding="utf-8")
    prunectl.prune(folder, prunectl.PruneOptions(rate=0.3, output=tmp_path / "pruned"))
    return tmp_path / "pruned", text


def _args(bundle: Path, text: Path, out: Path, *extra: str, quiet: bool = True) -> list[str]:
    return ["finetune", str(bundle), "--distill", "--data", str(text), "--steps", str(STEPS), "--lr", "3e-3",
            "--calib-seq-len", "16", "--calib-tokens", "512", "--checkpoint-every", "4", "-o", str(out),
            *(["-q"] if quiet else []), *extra]


def _bundle_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # what torchrun gives each process: the same kernels everywhere


def test_a_killed_distillation_resumes_to_the_uninterrupted_bytes(tmp_path: Path) -> None:
    bundle, text = _pruned(tmp_path)
    reference = tmp_path / "reference"
    subprocess.run([str(BIN / "prunectl"), *_args(bundle, text, reference)], check=True, cwd=ROOT, env=_env())
    assert not (tmp_path / "reference.distill-state").exists()

    killed = tmp_path / "killed"
    state = tmp_path / "killed.distill-state"
    process = subprocess.Popen([str(BIN / "prunectl"), *_args(bundle, text, killed)], cwd=ROOT, env=_env())
    deadline = time.monotonic() + 180
    while not (state / "state.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)  # mid-run: right after the first checkpoint
    process.wait()
    assert (state / "state.pt").exists() and not killed.exists(), "the run finished before it could be killed"
    saved = load_state(state, "distillation state")
    assert 4 <= saved.data["step"] < STEPS and saved.data["step"] % 4 == 0
    assert {"optimizer", "scheduler"} <= set(saved.tensors)
    before = (state / "state.pt").read_bytes()

    changed = invoke(*_args(bundle, text, killed, "--seed", "1"))
    assert_clean_failure(changed, 3, str(state), "--seed: 0 when the run started, 1 now", out=killed)
    assert (state / "state.pt").read_bytes() == before  # the refused run left the state as it was

    resumed = subprocess.run([str(BIN / "prunectl"), *_args(bundle, text, killed, quiet=False)], check=True,
                             cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert f"resuming at step {saved.data['step']} of {STEPS} from {state}" in resumed.stderr
    assert _bundle_bytes(killed) == _bundle_bytes(reference)
    assert not state.exists()
    prunectl.load(killed)


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed")
def test_torchrun_two_processes_write_the_bytes_of_one(tmp_path: Path) -> None:
    pytest.importorskip("torch.distributed")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    bundle, text = _pruned(tmp_path)
    single = tmp_path / "single"
    subprocess.run([str(BIN / "prunectl"), *_args(bundle, text, single, "--micro-batches", "2")], check=True,
                   cwd=ROOT, env=_env())
    spread = tmp_path / "spread"
    ran = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "prunectl",
                          *_args(bundle, text, spread)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert _bundle_bytes(spread) == _bundle_bytes(single)
    assert not (tmp_path / "spread.distill-state").exists()
