"""The in-process example in docs/ runs as a user would run it, and prints what it claims."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "in_process.py"


def test_the_in_process_example_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sizes, reloaded = done.stdout.strip().splitlines()
    before, after, gap = re.match(r"params (\d+) -> (\d+), soft vs hard max diff (\S+)", sizes).groups()
    assert int(after) < int(before) / 2 and float(gap) < 1e-4
    assert reloaded == "reloaded equals the pruned model: True"
    assert (tmp_path / "out" / "manifest.json").is_file()
