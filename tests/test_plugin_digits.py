"""The example plugin in plugins/prunectl-digits, installed into the test environment: its
criterion is listed by ``prunectl criteria``, its task feeds data-driven criteria, its models
rebuild from a bundle. Everything runs in real subprocesses, which see the installed package."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

PLUGIN = ROOT / "plugins" / "prunectl-digits"
PRUNECTL = [sys.executable, "-m", "prunectl"]


def run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed() -> None:
    """``make test`` installs the plugin in its $(STAMP) rule; install it here if it is not."""
    if run([sys.executable, "-c", "import prunectl_digits"]).returncode != 0:
        done = run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "-e", str(PLUGIN)])
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def trained(installed, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    done = run([sys.executable, "-m", "prunectl_digits.train", str(out), "--models", "mlp"])
    assert done.returncode == 0, done.stderr
    accuracy = float(re.search(r"test ([\d.]+)%", done.stdout).group(1))
    assert accuracy > 93.0, done.stdout  # a real model of real digits, not random weights
    return out


def test_criteria_lists_the_plugin_criterion(installed) -> None:
    done = run(PRUNECTL + ["criteria", "--json"])
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["linf"]["class"] == "prunectl_digits.criteria:LInfNorm"
    assert rows["linf"]["needs_data"] is False
    assert {"l1", "fpgm", "taylor", "thinet"} <= set(rows)
    table = run(PRUNECTL + ["criteria"])
    assert "linf" in table.stdout and "needs data" in table.stdout


@pytest.mark.parametrize("extra", [["--criterion", "linf"],
                                   ["--criterion", "taylor", "--data", "digits", "--global", "--rate", "0.4"]])
def test_prune_with_plugin_criterion_task_and_model(extra: list[str], trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    done = run(PRUNECTL + ["prune", str(trained / "mlp.pt"), "--spec", str(trained / "mlp.json"), "-o", str(out),
                           "--json", *extra])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["manifest"]["criterion"] == extra[1]
    assert result["manifest"]["rebuild"]["factory"] == "digits:mlp"
    assert result["report"]["params"]["after"] < result["report"]["params"]["before"]
    assert run(PRUNECTL + ["verify", str(out)]).returncode == 0


def test_data_driven_criterion_without_data_fails_with_exit_3(trained: Path) -> None:
    done = run(PRUNECTL + ["prune", str(trained / "mlp.pt"), "--spec", str(trained / "mlp.json"),
                           "--criterion", "taylor"])
    assert done.returncode == 3
    assert "needs data" in done.stderr and "--data" in done.stderr


def test_training_is_deterministic(installed, tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        assert run([sys.executable, "-m", "prunectl_digits.train", str(tmp_path / name), "--models", "mlp",
                    "--epochs", "2"]).returncode == 0
        digests.append(hashlib.sha256((tmp_path / name / "mlp.pt").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
