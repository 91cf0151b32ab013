"""--config FILE: any option of prune/auto/finetune by its long name from JSON or YAML; the command line
wins; an unknown key or a bad value is one line naming the file and key, exit 3, nothing written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import ROOT

from prunectl.cli import cli

SPEC = ROOT / "fixtures" / "specs" / "small_mlp.json"


@pytest.fixture
def small_mlp(checkpoints) -> Path:
    return checkpoints["small_mlp"]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_the_file_sets_options_and_the_command_line_wins(small_mlp, tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"spec": str(SPEC), "rate": 0.5, "round_to": 4, "exclude": ["fc2*"],
                                  "output": str(tmp_path / "from-file")}))
    result = CliRunner().invoke(cli, ["prune", str(small_mlp), "--config", str(config), "--rate", "0.25",
                                      "-o", str(tmp_path / "from-cli"), "-q"])
    assert result.exit_code == 0, result.output
    manifest = _manifest(tmp_path / "from-cli")  # -o on the command line beats the file's output
    assert not (tmp_path / "from-file").exists()
    assert manifest["rate"] == 0.25 and manifest["round_to"] == 4  # --rate wins, round-to from the file
    assert manifest["selection"]["exclude"] == ["fc2*"]


def test_yaml_in_a_real_process_with_lists_and_flags(small_mlp, tmp_path):
    pytest.importorskip("yaml")
    config = tmp_path / "Pruning.yaml"
    config.write_text(f"spec: {SPEC}\nrate: 0.5\ninput-shape: [1, 64]\nexclude: fc2*\nquiet: true\n")
    done = subprocess.run([sys.executable, "-m", "prunectl", "prune", str(small_mlp), "--config", str(config),
                           "-o", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # quiet: true
    assert _manifest(tmp_path / "o")["input"]["shape"] == [1, 64]


@pytest.mark.parametrize("text, said", [
    ('{"rate": 0.5, "rnd": 3}', "unknown option 'rnd' for `prunectl prune`"),
    ('{"rate": "half"}', "rate: Invalid value"),
    ('{"onnx": "yes"}', "onnx: expected true or false"),
    ('{"rate": 0.5, "rate": 0.3}', "duplicate key"),
    ('{"round-to": 2, "round_to": 4}', "given twice"),
    ('[0.5]', "a run config is a mapping"),
    ('{"rate": ', "not valid JSON"),
])
def test_a_bad_file_is_one_line_exit_3_naming_it(small_mlp, tmp_path, text, said):
    config = tmp_path / "run.json"
    config.write_text(text)
    result = CliRunner().invoke(cli, ["prune", str(small_mlp), "--spec", str(SPEC), "--config", str(config),
                                      "-o", str(tmp_path / "o")])
    assert result.exit_code == 3, result.output
    line, = result.output.strip().splitlines()
    assert line.startswith(f"error: {config}: ") and said in line
    assert not (tmp_path / "o").exists()


def test_yaml_without_pyyaml_names_the_extra(small_mlp, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
    config = tmp_path / "run.yaml"
    config.write_text("rate: 0.5\n")
    result = CliRunner().invoke(cli, ["prune", str(small_mlp), "--config", str(config), "-o", str(tmp_path / "o")])
    assert result.exit_code == 3 and "prunectl[yaml]" in result.output

