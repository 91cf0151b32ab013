"""Shared fixtures: deterministic checkpoints of every fixture model, made once per session.

tests/ mirrors prunectl/: one folder per package folder (tests/load tests prunectl/load, ...),
the whole-pipeline tests at the top, and support modules (helpers, fuzzing, the small model
zoos) in tests/support, which is put on sys.path here: ``from helpers import ...``. Model
modules are imported as ``tests.support.NAME`` so that their factory strings
("tests.support.trace_models:ConcatBlock") resolve to the same classes.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = ROOT / "tests" / "support"
for path in (ROOT, SUPPORT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from fixtures.make_checkpoints import make_all  # noqa: E402


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """name -> .pt state_dict of every fixture (the .safetensors twin sits beside it)."""
    return make_all(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    # factories such as "fixtures.models:AlexNet" resolve from the working directory
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """mlp.pt/mlp.json and cnn.pt/cnn.json of the digits plugin, trained briefly and deterministically."""
    pytest.importorskip("prunectl_digits")
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, "-m", "prunectl_digits.train", str(out), "--epochs", "12"], check=True,
                   capture_output=True)
    return out
