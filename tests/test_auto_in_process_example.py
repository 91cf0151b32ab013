"""The in-process auto example in docs/ runs as a user would run it, and prints what it claims."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "auto_in_process.py"


def test_the_auto_in_process_example_runs(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    done = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sizes, reloaded = done.stdout.strip().splitlines()
    before, after, accuracy_before, accuracy_after = re.match(
        r"params (\d+) -> (\d+), validation (\S+) -> (\S+) \(", sizes).groups()
    assert int(after) < int(before) and float(accuracy_after) >= float(accuracy_before) - 1.0
    assert reloaded == "reloaded equals the searched model: True"
    assert (tmp_path / "out" / "history.json").is_file()
