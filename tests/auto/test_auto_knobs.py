"""CAC's trust-region knobs (--trust-radius, --scaling-factor, --calc-iter) and --lr: each changes the
run it is given to, is recorded in report.json, and is a one-line exit 3 when out of range."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("prunectl_digits")

from prunectl.cli import cli  # noqa: E402


def _auto(digits, out, *extra):
    return CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"), "--task",
                                    "digits", "--max-drop", "1", "--epochs", "1", "--max-steps", "2", "-o", str(out),
                                    "--json", *extra])


def test_a_tiny_trust_radius_leaves_cac_no_cut(digits, tmp_path):
    result = _auto(digits, tmp_path / "o", "--trust-radius", "1e-12")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    auto = json.loads((tmp_path / "o" / "report.json").read_text())["auto"]
    assert auto["trust_radius"] == 1e-12
    # CAC's thresholds, scaled under the radius, allow no cut; only the finer steps (fine_steps.py) cut
    assert auto["trials"][0]["note"].startswith("no layer can be cut within its error threshold")
    assert all(h["phase"] == "cac-fine" for h in facts["history"][1:])


def test_calc_iter_scaling_factor_and_lr_are_used_and_recorded(digits, tmp_path):
    default = _auto(digits, tmp_path / "default")
    assert default.exit_code == 0, default.output
    knobs = _auto(digits, tmp_path / "knobs", "--calc-iter", "1", "--scaling-factor", "3", "--lr", "0.2")
    assert knobs.exit_code == 0, knobs.output
    auto = json.loads((tmp_path / "knobs" / "report.json").read_text())["auto"]
    assert (auto["calc_iter"], auto["scaling_factor"], auto["lr"]) == (1, 3.0, 0.2)
    assert not {"calc_iter", "scaling_factor", "lr", "trust_radius"} & set(
        json.loads((tmp_path / "default" / "report.json").read_text())["auto"])  # defaults: bytes as before
    assert auto["trials"][0]["log"][0]["lr"] == 0.2  # the fine-tune's first epoch ran at --lr
    assert ((tmp_path / "knobs" / "model.safetensors").read_bytes()
            != (tmp_path / "default" / "model.safetensors").read_bytes())


@pytest.mark.parametrize("option, value, said", [("--scaling-factor", "1", "expected a number > 1"),
                                                 ("--trust-radius", "0", "expected a number > 0"),
                                                 ("--calc-iter", "0", "expected an integer >= 1"),
                                                 ("--lr", "-0.1", "expected a number > 0")])
def test_out_of_range_knobs_are_exit_3(digits, tmp_path, option, value, said):
    result = _auto(digits, tmp_path / "o", option, value)
    assert result.exit_code == 3 and said in result.output and option in result.output
    assert not (tmp_path / "o").exists()


def test_finetune_takes_lr_too(digits, tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["prune", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"), "--rate", "0.5",
                               "-o", str(tmp_path / "p"), "-q"]).exit_code == 0
    result = runner.invoke(cli, ["finetune", str(tmp_path / "p"), "--task", "digits", "--epochs", "1", "--lr", "0.05",
                                 "-o", str(tmp_path / "t"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["log"][0]["lr"] == 0.05


def test_auto_takes_its_required_task_and_a_flag_pair_from_a_run_config(digits, tmp_path):
    config = tmp_path / "auto.json"
    config.write_text(json.dumps({"task": "digits", "spec": str(digits / "mlp.json"), "max-steps": 0,
                                  "full-retrain": True, "rates": [0.2, 0.0], "max-drop": 2, "calc-iter": 2}))
    result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--config", str(config),
                                      "-o", str(tmp_path / "o"), "-q"])
    assert result.exit_code == 0, result.output
    auto = json.loads((tmp_path / "o" / "report.json").read_text())["auto"]
    assert (auto["max_drop"], auto["calc_iter"]) == (2.0, 2)
