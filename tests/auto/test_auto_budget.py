"""Accuracy mode uses its --max-drop budget and is monotone in it: a looser budget never ends at a
bigger model. Before: on the digits MLP, --max-drop 2 and 5 both stopped at 2,985 parameters, bigger
than --max-drop 1's 2,571, "no layer can be cut within its error threshold" with most of the budget
unused (CAC's thresholds come from the loss, which a loose budget lets rise)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("prunectl_digits")

from prunectl.cli import cli  # noqa: E402

DROPS = (0.5, 2.0, 5.0)  # before: 2,649, 2,985, 2,985 parameters


@pytest.fixture(scope="module")
def runs(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("budget")
    found = {}
    for drop in DROPS:
        result = CliRunner().invoke(cli, ["auto", str(digits / "mlp.pt"), "--spec", str(digits / "mlp.json"),
                                          "--task", "digits", "--max-drop", str(drop), "-o", str(out / str(drop)),
                                          "--json"])
        assert result.exit_code == 0, result.output
        found[drop] = json.loads(result.output)
    return found


def test_a_looser_budget_never_gives_a_bigger_model(runs):
    params = [runs[drop]["history"][-1]["params"] for drop in DROPS]
    assert params == sorted(params, reverse=True), dict(zip(DROPS, params))
    assert params[-1] < params[0]


def test_the_search_spends_its_budget_and_stays_within_it(runs):
    for drop, facts in runs.items():
        history = facts["history"]
        original, final = history[0]["accuracy"], history[-1]["accuracy"]
        assert original - final <= drop + 1e-6
        # it ends only when no single smallest cut fits the budget any more
        assert facts["stopped_because"].startswith("no layer can be cut within --max-drop"), facts["stopped_because"]
    assert runs[5.0]["history"][-1]["params"] < 2649  # before: 2,985, bigger than --max-drop 0.5 gave
    assert any(h["phase"] == "cac-fine" for h in runs[5.0]["history"])


def test_the_cnn_too(digits, tmp_path):
    # the CNN was the case where stopping each retrain at the floor left no room for the next cut:
    # --max-drop 1 ended at 5,238 parameters, --max-drop 0.5 at 2,649
    params = {}
    for drop in (0.5, 1.0):
        result = CliRunner().invoke(cli, ["auto", str(digits / "cnn.pt"), "--spec", str(digits / "cnn.json"),
                                          "--task", "digits", "--max-drop", str(drop), "-o", str(tmp_path / str(drop)),
                                          "--json"])
        assert result.exit_code == 0, result.output
        params[drop] = json.loads(result.output)["history"][-1]["params"]
    assert params[1.0] <= params[0.5], params
