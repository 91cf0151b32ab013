"""The digits checkpoints every auto test searches (trained once per session)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """mlp.pt/mlp.json and cnn.pt/cnn.json, trained briefly and deterministically."""
    pytest.importorskip("prunectl_digits")
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, "-m", "prunectl_digits.train", str(out), "--epochs", "12"], check=True,
                   capture_output=True)
    return out
