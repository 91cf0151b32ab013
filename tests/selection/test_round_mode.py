"""--round-mode: which multiple of --round-to a cut width goes to (up today, down as NetAdapt's resize_alf)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import prunectl
from prunectl.cli import cli
from prunectl.selection.per_layer import SelectOptions, kept_count

pytest.importorskip("prunectl_digits")

from prunectl_digits.models import DigitsMLP, spec_for  # noqa: E402


@pytest.mark.parametrize(("mode", "rate", "kept"), [
    ("up", 0.3, 48), ("down", 0.3, 40), ("nearest", 0.3, 48),  # 64 at 0.3 keeps 45
    ("nearest", 0.33, 40),  # keeps 43: 40 is nearer than 48
    ("down", 0.0, 64), ("down", 0.01, 64),  # nothing cut: the layer stays whole
    ("down", 0.99, 8),  # never below one step (min_channels 1 rounded up)
])
def test_kept_count_aligns_the_way_asked(mode, rate, kept):
    assert kept_count(64, rate, SelectOptions(round_to=8, round_mode=mode)) == kept


def test_unaligned_layer_goes_down_to_the_multiple_below():
    assert kept_count(45, 0.05, SelectOptions(round_to=8, round_mode="down")) == 40
    assert kept_count(45, 0.05, SelectOptions(round_to=8, round_mode="up")) == 45  # 48 > 45: stays whole


def _model() -> DigitsMLP:
    torch.manual_seed(0)
    return DigitsMLP()


def test_prune_with_round_mode_down_keeps_the_lower_multiple():
    result = prunectl.prune(_model(), example_inputs=torch.randn(1, 1, 8, 8), rate=0.3, round_to=8,
                            round_mode="down")
    assert (result.model.fc1.out_features, result.model.fc2.out_features) == (40, 16)  # 45 -> 40, 23 -> 16
    assert result.manifest.to_json()["round_mode"] == "down"
    default = prunectl.prune(_model(), example_inputs=torch.randn(1, 1, 8, 8), rate=0.3, round_to=8)
    assert (default.model.fc1.out_features, default.model.fc2.out_features) == (48, 24)
    assert "round_mode" not in default.manifest.to_json()  # default bundles keep their bytes


def test_spec_key_round_mode_is_read_and_the_option_wins(tmp_path: Path):
    spec = {**spec_for("mlp", rate=0.3), "round_to": 8, "round_mode": "down"}
    (tmp_path / "mlp.json").write_text(json.dumps(spec))
    model = _model()
    torch.save({"state_dict": model.state_dict(), "model": {"factory": "digits:mlp", "args": {}}}, tmp_path / "m.pt")
    runner = CliRunner()
    result = runner.invoke(cli, ["prune", str(tmp_path / "m.pt"), "--spec", str(tmp_path / "mlp.json"),
                                 "-o", str(tmp_path / "down"), "-q"])
    assert result.exit_code == 0, result.output
    assert prunectl.load(tmp_path / "down").fc1.out_features == 40
    result = runner.invoke(cli, ["prune", str(tmp_path / "m.pt"), "--spec", str(tmp_path / "mlp.json"),
                                 "--round-mode", "nearest", "-o", str(tmp_path / "near"), "-q"])
    assert result.exit_code == 0, result.output
    assert prunectl.load(tmp_path / "near").fc1.out_features == 48


def test_bad_round_mode_is_one_line_naming_the_key(tmp_path: Path):
    spec = {**spec_for("mlp"), "round_mode": "sideways"}
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    torch.save({"state_dict": _model().state_dict(), "model": {"factory": "digits:mlp", "args": {}}},
               tmp_path / "m.pt")
    done = subprocess.run([sys.executable, "-m", "prunectl", "prune", str(tmp_path / "m.pt"), "--spec",
                           str(tmp_path / "bad.json"), "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 3 and done.stderr.count("\n") == 1
    assert "bad.json: round_mode: expected one of up, down, nearest" in done.stderr
    assert not (tmp_path / "o").exists()
    with pytest.raises(prunectl.SpecError, match="--round-mode"):
        prunectl.prune(_model(), example_inputs=torch.randn(1, 1, 8, 8), round_mode="sideways")
