"""Crash safety with real processes: SIGKILL at random points, and concurrent writers.

After ``prunectl prune`` or ``prunectl export`` is killed, the output path holds either
nothing or a complete bundle that passes ``prunectl verify`` (when it already held a bundle:
that bundle or the new one, never a mix and never nothing). Most kills are aimed at the
dangerous window: the moment the hidden staging directory appears (files being written and
swapped in), plus a random delay; the rest fall anywhere in the run. Two runs writing the
same output path at once leave one complete bundle, from one of them.

``prunectl auto`` (a search with retraining, ~10 s even on the smallest fixture) gets one
aimed kill in the normal suite and more under ``make fuzz``.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fuzzing import record
from helpers import ROOT

import prunectl
from fixtures.make_checkpoints import FIXTURES

SPEC = FIXTURES["small_mlp"][2]
KILLS = int(os.environ.get("PRUNECTL_CRASH_KILLS", "0") or 0)  # raised by `make fuzz`


def _prunectl(*args: str) -> list[str]:
    return [sys.executable, "-m", "prunectl", *args]


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_in_window(proc: subprocess.Popen, parent: Path, name: str, rng: random.Random, aimed: bool) -> bool:
    """SIGKILL ``proc``; aimed: once a staging dir ``.NAME.tmp-*`` exists, after 0-50 ms (skewed to 0);
    otherwise at a uniform random time over a typical run. True if it died by the kill."""
    if aimed:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any(parent.glob(f".{name}.tmp-*")):
                break
            time.sleep(0.0005)
        time.sleep(0.05 * rng.random() ** 2)  # the write-and-swap of a small bundle takes a few ms
    else:
        time.sleep(rng.uniform(0.2, 4.0))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def _state(out: Path) -> str:
    """'nothing', or the rate recorded by a bundle that passes verify (raises otherwise)."""
    if not out.exists():
        return "nothing"
    prunectl.verify(out)  # checksums, seal, strict rebuild, forward pass, ONNX if listed
    return str(json.loads((out / "manifest.json").read_text())["rate"])


def _check_after_kill(command: str, out: Path, killed: bool, allowed: set[str]) -> str:
    try:
        state = _state(out)
    except prunectl.PrunectlError as exc:
        record("crash", command, -9 if killed else 0, False, killed=killed, state="broken", message=str(exc))
        raise AssertionError(f"after SIGKILL the output is a half-written bundle: {exc}") from None
    record("crash", command, -9 if killed else 0, False, killed=killed, state=state)
    assert state in allowed, f"{out} holds {state!r}, expected one of {allowed}"
    return state


@pytest.mark.parametrize("replace", [False, True], ids=["fresh-output", "replacing-a-bundle"])
def test_sigkill_during_prune_leaves_nothing_or_a_complete_bundle(replace, checkpoints, tmp_path):
    rng = random.Random(1234 + replace)
    out = tmp_path / "bundle"
    if replace:
        prunectl.prune(checkpoints["small_mlp"], prunectl.PruneOptions(spec=SPEC, output=out, rate=0.25))
    allowed = {"0.25", "0.5"} if replace else {"nothing", "0.5"}
    kills = KILLS or 3
    for i in range(kills):
        proc = _spawn(_prunectl("prune", str(checkpoints["small_mlp"]), "--spec", str(SPEC), "-o", str(out),
                                "--onnx", "-q", "--rate", "0.5"))
        killed = _kill_in_window(proc, tmp_path, out.name, rng, aimed=i % 3 != 2)
        _check_after_kill("prune", out, killed, allowed)
    # the next complete run sweeps what the killed ones left behind
    subprocess.run(_prunectl("prune", str(checkpoints["small_mlp"]), "--spec", str(SPEC), "-o", str(out), "-q"),
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    assert not list(tmp_path.glob(f".{out.name}.tmp-*"))
    prunectl.verify(out)


def test_sigkill_during_export_keeps_the_bundle(checkpoints, tmp_path):
    """export rewrites an existing bundle: after a kill it is the old one or the new one."""
    rng = random.Random(99)
    out = tmp_path / "bundle"
    prunectl.prune(checkpoints["small_mlp"], prunectl.PruneOptions(spec=SPEC, output=out))
    for i in range(KILLS or 2):
        proc = _spawn(_prunectl("export", str(out), "--onnx", "-q"))
        killed = _kill_in_window(proc, tmp_path, out.name, rng, aimed=i % 4 != 3)
        _check_after_kill("export", out, killed, {"0.5"})


def test_sigkill_during_auto_leaves_nothing_or_a_complete_bundle(checkpoints, tmp_path):
    rng = random.Random(7)
    out = tmp_path / "bundle"
    for _ in range(max(1, KILLS // 4)):
        proc = _spawn(_prunectl("auto", str(checkpoints["small_mlp"]), "--spec", str(SPEC), "--task", "digits",
                                "--max-steps", "2", "--epochs", "1", "-o", str(out), "-q"))
        killed = _kill_in_window(proc, tmp_path, out.name, rng, aimed=True)
        if out.exists():
            prunectl.verify(out)
        record("crash", "auto", -9 if killed else 0, False, killed=killed,
               state="complete" if out.exists() else "nothing")


def test_concurrent_runs_never_mix(checkpoints, tmp_path):
    """Two processes write the same output at once (different rates, so files differ):
    both succeed, and the result is one run's complete bundle."""
    out = tmp_path / "bundle"
    for _ in range(max(1, KILLS // 4)):
        procs = [_spawn(_prunectl("prune", str(checkpoints["small_mlp"]), "--spec", str(SPEC), "-o", str(out),
                                  "-q", "--rate", rate)) for rate in ("0.3", "0.6")]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()
        state = _state(out)
        record("concurrent", "prune", 0, False, state=state)
        assert state in {"0.3", "0.6"}
        assert not list(tmp_path.glob(f".{out.name}.tmp-*"))
