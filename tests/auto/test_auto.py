"""prunectl auto / finetune on the digits task: bundles, history, resume after SIGKILL, torchrun.

Tiny settings (a few epochs, --max-steps) keep each run to seconds on 2 cores.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("prunectl_digits")

from helpers import ROOT  # noqa: E402

import prunectl  # noqa: E402
from prunectl.cli import cli  # noqa: E402
from prunectl.formats.history import read_history  # noqa: E402
from tests.support.processes import BIN, assert_torchrun_writes_one_process_bytes, bundle_bytes  # noqa: E402


def test_auto_accuracy_mode_writes_a_verified_bundle_with_history(digits, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"),
                                      "--task", "digits", "--max-drop", "1", "--epochs", "2", "--max-steps", "3",
                                      "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert prunectl.verify(out)["checksums"] == "ok"
    history = read_history(out / "history.json")  # the format `prunectl report` reads
    assert history[0]["step"] == 0 and history[0]["phase"] == "original"
    assert {"step", "params", "macs", "accuracy", "widths"} <= set(history[-1])
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "report.json").read_text())
    auto = report["auto"]
    assert auto["within_max_drop"] and auto["final_accuracy"] >= auto["original_accuracy"] - 1
    assert len(history) >= 2 and history[-1]["params"] < history[0]["params"]
    assert report["params"]["after"] == history[-1]["params"]
    model = prunectl.load(out)
    assert model.fc1.out_features == history[-1]["widths"]["fc1"]
    assert not (tmp_path / "out.auto-state").exists()


def test_auto_target_mode_reaches_the_macs_target(digits, tmp_path):
    out = tmp_path / "cnn"
    result = CliRunner().invoke(cli, ["auto", str(digits / "cnn.pt"), "--spec", str(digits / "cnn.json"),
                                      "--task", "digits", "--target-macs", "0.7", "--epochs", "1", "-o", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    history = json.loads(result.output)["history"]
    assert history[-1]["macs"] <= 0.7 * history[0]["macs"]
    assert all(h["phase"] == "netadapt" and "layer" in h for h in history[1:])
    assert prunectl.verify(out)["forward"] == "ok"


def test_finetune_writes_a_new_verified_bundle(digits, tmp_path):
    first = tmp_path / "pruned"
    runner = CliRunner()
    assert runner.invoke(cli, ["prune", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"), "--rate", "0.5",
                               "-o", str(first), "-q"]).exit_code == 0
    second = tmp_path / "tuned"
    result = runner.invoke(cli, ["finetune", str(first), "--task", "digits", "--epochs", "2", "-o", str(second),
                                 "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert len(facts["log"]) == 2 and facts["log"][-1]["accuracy"] == facts["accuracy_after"]
    assert prunectl.verify(second)["checksums"] == "ok"
    assert (second / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()
    history = read_history(second / "history.json")
    assert (history[-1]["phase"] == "finetune"
            and history[-1]["accuracy"] == pytest.approx(facts["accuracy_after"], abs=1e-5))


def test_existing_state_without_resume_is_refused(digits, tmp_path):
    (tmp_path / "out.auto-state").mkdir()
    from prunectl.auto.state import save_state

    save_state(tmp_path / "out.auto-state", {"step": 1}, {})
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"),
                                      "--task", "digits", "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 3 and "--resume" in result.output


def test_a_state_from_other_options_is_refused_naming_the_difference(digits, tmp_path):
    from prunectl.auto.state import save_state

    save_state(tmp_path / "out.auto-state", {"fingerprint": {"max_drop": 2.0}, "step": 1}, {})
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"),
                                      "--task", "digits", "--resume", "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 3, result.output
    assert "(calc_iter: None when the run started, 8 now)" in " ".join(result.output.split())


def _auto_args(digits: Path, out: Path) -> list[str]:
    return ["auto", str(digits / "cnn.pt"), "--spec", str(digits / "cnn.json"), "--task", "digits",
            "--max-drop", "1", "--epochs", "2", "--max-steps", "6", "-o", str(out), "-q"]


def test_resume_after_sigkill_ends_byte_identical(digits, tmp_path):
    reference = tmp_path / "reference"  # uninterrupted, in this process
    assert CliRunner().invoke(cli, _auto_args(digits, reference)).exit_code == 0

    killed = tmp_path / "killed"
    state = tmp_path / "killed.auto-state" / "state.pt"
    process = subprocess.Popen([str(BIN / "prunectl"), *_auto_args(digits, killed)], cwd=ROOT)
    deadline = time.monotonic() + 120
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)  # mid-run: right after the first completed step
    process.wait()
    assert state.exists() and not killed.exists(), "the run finished before it could be killed"

    from prunectl.auto.state import load_state

    saved, _ = load_state(state.parent)
    assert 1 <= saved["step"] < 6
    subprocess.run([str(BIN / "prunectl"), *_auto_args(digits, killed), "--resume"], check=True, cwd=ROOT)
    assert bundle_bytes(killed) == bundle_bytes(reference)
    assert not state.parent.exists()


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed")
def test_torchrun_two_processes_match_one_process(digits, tmp_path):
    args = ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"), "--task", "digits", "--max-drop", "1",
            "--epochs", "2", "--max-steps", "3", "-q"]
    single, spread = tmp_path / "single", tmp_path / "spread"
    assert_torchrun_writes_one_process_bytes([*args, "--micro-batches", "2", "-o", str(single)],
                                             [*args, "-o", str(spread)], single, spread)


def test_spent_budget_stops_before_the_first_step(digits, tmp_path):
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"),
                                      "--task", "digits", "--budget-minutes", "0", "-o", str(tmp_path / "o"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["stopped_because"] == "--budget-minutes spent" and len(facts["history"]) == 1
    assert prunectl.verify(tmp_path / "o")["checksums"] == "ok"


def test_unknown_task_is_exit_3_and_writes_nothing(digits, tmp_path):
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"),
                                      "--task", "no-such-task", "-o", str(tmp_path / "o")])
    assert result.exit_code == 3 and "available" in result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.auto-state").exists()


def test_final_fine_tune_keeps_its_last_epoch(digits, tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"),
                                      "--task", "digits", "--max-steps", "0", "--final-epochs", "2", "-o", str(out),
                                      "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    history = read_history(out / "history.json")
    assert [h["phase"] for h in history] == ["original", "final-finetune"]
    assert len(report["auto"]["final_log"]) == 2
    assert history[-1]["accuracy"] == pytest.approx(report["auto"]["final_log"][-1]["accuracy"], abs=1e-5)
    import torch

    original = torch.load(digits / "mlp.pt", weights_only=True)["state_dict"]["fc1.weight"]
    assert not torch.equal(prunectl.load(out).fc1.weight, original)  # trained, whatever the validation said
