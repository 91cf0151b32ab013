"""finetune --distill --task on the digits CNN: the pruned model trained toward its unpruned
original's logits (found from the manifest's source) gets closer to it, deterministically, with
a temperature and a task loss weight recorded; a teacher with other outputs, or none to be found,
is one line and exit 5 with nothing written; SIGKILLed mid-run and rerun, and under torchrun with 2
processes, it writes the bytes of one uninterrupted process (BatchNorm's statistics included); a
pruned timm ViT on the same task is distilled the same way."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("prunectl_digits")

from helpers import ROOT, assert_clean_failure, invoke  # noqa: E402

import prunectl  # noqa: E402
from prunectl.formats.history import read_history  # noqa: E402
from prunectl_digits.models import DigitsCNN  # noqa: E402
from tests.support.processes import BIN, assert_torchrun_writes_one_process_bytes, bundle_bytes, one_thread_env  # noqa: E402,E501


@pytest.fixture
def pruned(digits: Path, tmp_path: Path) -> Path:
    """The digits CNN pruned at 0.5, its original beside the bundle as the manifest names it."""
    shutil.copy(digits / "cnn.pt", tmp_path / "cnn.pt")
    result = invoke("prune", tmp_path / "cnn.pt", "--spec", digits / "cnn.json", "--rate", "0.5",
                    "-o", tmp_path / "pruned", "-q")
    assert result.exit_code == 0, result.output
    return tmp_path / "pruned"


def _args(bundle: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", str(bundle), "--distill", "--task", "digits", "--temperature", "4", "--task-loss-weight",
            "0.5", "-o", str(out), *extra]


def test_the_pruned_cnn_gets_closer_to_its_original_deterministically(pruned: Path, tmp_path: Path) -> None:
    outputs = []
    for run in ("a", "b"):
        result = invoke(*_args(pruned, tmp_path / run, "--epochs", "2", "--json"))
        assert result.exit_code == 0, result.output
        outputs.append(tmp_path / run)
    shown = json.loads(result.output)
    assert shown["kl_after"] < shown["kl_before"] and shown["steps"] == 2 * 17  # 1,078 images in batches of 64
    report = json.loads((outputs[0] / "report.json").read_text())["distill"]
    assert report["task"] == "digits" and report["teacher"] == "cnn.pt"
    assert report["temperature"] == 4 and report["task_loss_weight"] == 0.5 and report["steps"] == 34
    assert report["accuracy_after"] == shown["accuracy_after"] and report["log"][-1]["step"] == 34
    assert "loss" in report["log"][0]  # the KL plus the weighted task loss
    assert bundle_bytes(outputs[0]) == bundle_bytes(outputs[1])
    assert (outputs[0] / "model.safetensors").read_bytes() != (pruned / "model.safetensors").read_bytes()
    history = read_history(outputs[0] / "history.json")
    assert [h["phase"] for h in history] == ["original", "distill"]
    assert history[-1]["accuracy"] == pytest.approx(shown["accuracy_after"], abs=1e-5)
    assert prunectl.verify(outputs[0])["checksums"] == "ok"


def test_a_teacher_with_other_outputs_or_none_found_is_exit_5(pruned: Path, tmp_path: Path) -> None:
    other = tmp_path / "twelve.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": DigitsCNN(num_classes=12).state_dict(),
                "model": {"factory": "digits:cnn", "args": {"num_classes": 12}}}, other)
    out = tmp_path / "out"
    result = invoke(*_args(pruned, out, "--steps", "2", "--teacher", str(other)))
    assert_clean_failure(result, 5, str(other), "gives (12,) outputs per example, the bundle's model (10,)", out=out)
    (tmp_path / "cnn.pt").unlink()
    result = invoke(*_args(pruned, out, "--steps", "2"))
    assert_clean_failure(result, 5, "'cnn.pt' is not beside the bundle", "--teacher PATH", out=out)
    result = invoke(*_args(pruned, out, "--steps", "2", "--epochs", "1"))
    assert_clean_failure(result, 3, "--steps 2 and --epochs 1: give one of them", out=out)
    assert not (tmp_path / "out.distill-state").exists()


def test_killed_and_rerun_it_writes_the_uninterrupted_bytes(pruned: Path, tmp_path: Path) -> None:
    args = ("--steps", "300", "--checkpoint-every", "5", "-q")
    reference = tmp_path / "reference"
    subprocess.run([str(BIN / "prunectl"), *_args(pruned, reference, *args)], check=True, cwd=ROOT,
                   env=one_thread_env())
    killed = tmp_path / "killed"
    state = tmp_path / "killed.distill-state" / "state.pt"
    process = subprocess.Popen([str(BIN / "prunectl"), *_args(pruned, killed, *args)], cwd=ROOT, env=one_thread_env())
    deadline = time.monotonic() + 120
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert state.exists() and not killed.exists(), "the run finished before it could be killed"
    subprocess.run([str(BIN / "prunectl"), *_args(pruned, killed, *args)], check=True, cwd=ROOT, env=one_thread_env())
    assert bundle_bytes(killed) == bundle_bytes(reference)
    assert not state.parent.exists()


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed")
def test_torchrun_two_processes_write_the_bytes_of_one(pruned: Path, tmp_path: Path) -> None:
    args = ("--epochs", "1", "-q")
    single, spread = tmp_path / "single", tmp_path / "spread"
    assert_torchrun_writes_one_process_bytes(_args(pruned, single, *args, "--micro-batches", "2"),
                                             _args(pruned, spread, *args), single, spread)


def test_a_pruned_vit_is_distilled_the_same_way(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from prunectl_digits.task import DigitsTask
    from tests.support.attention_models import DigitsTimmViT

    torch.manual_seed(0)
    teacher = DigitsTask().train(DigitsTimmViT(), epochs=2, lr=1e-3)
    checkpoint = tmp_path / "vit.pt"
    torch.save({"state_dict": teacher.state_dict(),
                "model": {"factory": "tests.support.attention_models:DigitsTimmViT", "args": {}}}, checkpoint)
    result = invoke("prune", checkpoint, "--input-shape", "1,1,8,8", "--rate", "0.5", "-o", tmp_path / "pruned", "-q")
    assert result.exit_code == 0, result.output
    result = invoke(*_args(tmp_path / "pruned", tmp_path / "kd", "--steps", "17", "--json"))
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["kl_after"] < shown["kl_before"] and shown["accuracy_after"] > shown["accuracy_before"]
    assert json.loads((tmp_path / "kd" / "report.json").read_text())["distill"]["teacher"] == "vit.pt"
    assert prunectl.verify(tmp_path / "kd")["checksums"] == "ok"
