"""finetune --distill on a tiny decoder, as real processes: SIGKILLed mid-run and run again, it
ends with the bytes of an uninterrupted run; a changed argument on resume is one line naming it
(exit 3), the state untouched; torchrun with 2 processes (gloo, CPU) writes the bytes of one
process with --micro-batches 2."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from helpers import ROOT, assert_clean_failure, invoke  # noqa: E402

import prunectl  # noqa: E402
from prunectl.training.run_state import load_state  # noqa: E402
from tests.support.processes import BIN, assert_torchrun_writes_one_process_bytes, bundle_bytes, one_thread_env  # noqa: E402,E501
from tests.support.text_models import pruned_llama  # noqa: E402

STEPS = 40


def _args(bundle: Path, text: Path, out: Path, *extra: str, quiet: bool = True) -> list[str]:
    return ["finetune", str(bundle), "--distill", "--data", str(text), "--steps", str(STEPS), "--lr", "3e-3",
            "--calib-seq-len", "16", "--calib-tokens", "512", "--checkpoint-every", "4", "-o", str(out),
            *(["-q"] if quiet else []), *extra]


def test_a_killed_distillation_resumes_to_the_uninterrupted_bytes(tmp_path: Path) -> None:
    bundle, text = pruned_llama(tmp_path)
    reference = tmp_path / "reference"
    subprocess.run([str(BIN / "prunectl"), *_args(bundle, text, reference)], check=True, cwd=ROOT, env=one_thread_env())
    assert not (tmp_path / "reference.distill-state").exists()

    killed = tmp_path / "killed"
    state = tmp_path / "killed.distill-state"
    process = subprocess.Popen([str(BIN / "prunectl"), *_args(bundle, text, killed)], cwd=ROOT, env=one_thread_env())
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
                             cwd=ROOT, env=one_thread_env(), capture_output=True, text=True)
    assert f"resuming at step {saved.data['step']} of {STEPS} from {state}" in resumed.stderr
    assert bundle_bytes(killed) == bundle_bytes(reference)
    assert not state.exists()
    prunectl.load(killed)


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed")
def test_torchrun_two_processes_write_the_bytes_of_one(tmp_path: Path) -> None:
    pytest.importorskip("torch.distributed")
    bundle, text = pruned_llama(tmp_path)
    single, spread = tmp_path / "single", tmp_path / "spread"
    assert_torchrun_writes_one_process_bytes(_args(bundle, text, single, "--micro-batches", "2"),
                                             _args(bundle, text, spread), single, spread)
    assert not (tmp_path / "spread.distill-state").exists()
