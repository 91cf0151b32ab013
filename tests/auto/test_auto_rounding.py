"""``auto``'s layer choices: aligned widths (--round-to: every cut lands on a multiple, and the search
still cuts) and excluded layers (--exclude: never cut)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("prunectl_digits")

import prunectl  # noqa: E402
from prunectl.cli import cli  # noqa: E402


def test_target_mode_with_round_to_cuts_aligned_widths(digits, tmp_path):
    # before: a one-channel proposal rounded back up to the full width, saved nothing, and the
    # search stopped at once with "no layer can be cut further"
    out = tmp_path / "o"
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"),
                                      "--task", "digits", "--target-params", "0.5", "--round-to", "8",
                                      "--epochs", "1", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    history = facts["history"]
    assert facts["stopped_because"].startswith("target reached")
    assert history[-1]["params"] <= 0.5 * history[0]["params"]
    assert all(h["widths"][layer] % 8 == 0 for h in history for layer in ("fc1", "fc2"))
    model = prunectl.load(out)
    assert (model.fc1.out_features, model.fc2.out_features) == (history[-1]["widths"]["fc1"],
                                                               history[-1]["widths"]["fc2"])


def test_exclude_keeps_matching_layers_at_full_width(digits, tmp_path):
    # before: auto had no --exclude ("No such option"); prune's glob matcher and decorator are reused
    out = tmp_path / "o"
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"),
                                      "--task", "digits", "--target-params", "0.6", "--exclude", "fc2*",
                                      "--epochs", "1", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    history = json.loads(result.output)["history"]
    assert history[-1]["params"] <= 0.6 * history[0]["params"]
    assert all(h["widths"]["fc2"] == 32 for h in history) and history[-1]["widths"]["fc1"] < 64
    assert json.loads((out / "report.json").read_text())["auto"]["exclude"] == ["fc2*"]
    assert prunectl.load(out).fc2.out_features == 32


def test_exclude_matching_no_layer_is_exit_3(digits, tmp_path):
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"),
                                      "--task", "digits", "--exclude", "conv*", "-o", str(tmp_path / "o")])
    assert result.exit_code == 3 and "--exclude 'conv*'" in result.output
    assert not (tmp_path / "o").exists()
