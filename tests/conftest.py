"""Shared fixtures: deterministic checkpoints of every fixture model, made once per session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fixtures.make_checkpoints import FIXTURES, make_all  # noqa: E402


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """name -> .pt state_dict of every fixture (the .safetensors twin sits beside it)."""
    return make_all(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch):
    # factories such as "fixtures.models:AlexNet" resolve from the working directory
    monkeypatch.chdir(ROOT)


FIXTURE_NAMES = sorted(FIXTURES)
