"""The training-loop example in docs/ runs as a user would run it, and prints what it claims."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "training_loop.py"


def test_the_training_loop_example_runs() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    agp_line, lottery_line = done.stdout.strip().splitlines()
    assert re.match(r"AGP: 80% of the weights cut, accuracy [01]\.\d{3}$", agp_line)
    assert re.match(r"lottery ticket: 78% of the weights cut, accuracy [01]\.\d{3}$", lottery_line)
