"""Re-pruning a bundle without a spec updates the widths in rebuild.args: a CAC-style strict load
of ``Class(**rebuild.args)`` takes the weights, and no resize is left for what the args express."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from fixtures.make_checkpoints import SPECS
from fixtures.models import SmallMLP
from prunectl.cli import cli


def _prune(*args) -> None:
    result = CliRunner().invoke(cli, ["prune", *map(str, args), "-q"])
    assert result.exit_code == 0, result.output


def test_a_bundle_pruned_again_without_a_spec_has_fresh_args(checkpoints, tmp_path: Path) -> None:
    _prune(checkpoints["small_mlp"], "--spec", SPECS / "small_mlp.json", "--rate", "0.5", "-o", tmp_path / "once")
    _prune(tmp_path / "once", "--rate", "0.5", "-o", tmp_path / "twice")
    manifest = json.loads((tmp_path / "twice" / "manifest.json").read_text())
    assert manifest["rebuild"]["args"] == {"num_classes": 10, "out_ch_fc1": 16, "out_ch_fc2": 8}
    assert manifest["resize"] == {}
    model = SmallMLP(**manifest["rebuild"]["args"])
    model.load_state_dict(load_file(str(tmp_path / "twice" / "model.safetensors")), strict=True)
    x = torch.randn(3, 64)
    from prunectl import load

    torch.testing.assert_close(model(x), load(tmp_path / "twice")(x), rtol=0, atol=0)


def test_args_that_do_not_set_a_width_alone_stay_and_resize_covers_the_rest(tmp_path: Path) -> None:
    """``hidden`` sets two layers that are pruned to different widths here: no single value fits, so the
    arg stays as it was and resize records the widths (the rebuild is still proven)."""
    from tests.support.trace_models import SharedWidth

    torch.manual_seed(0)
    torch.save({"state_dict": SharedWidth(hidden=16).state_dict(),
                "model": {"factory": "tests.support.trace_models:SharedWidth", "args": {"hidden": 16}}},
               tmp_path / "two.pt")
    spec = {"prunectl_spec": 1, "input": {"shape": [1, 8]},
            "layers": {"a": {"rate": 0.5}, "b": {"rate": 0.25}, "c": {"prune": False}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    _prune(tmp_path / "two.pt", "--spec", tmp_path / "spec.json", "-o", tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rebuild"]["args"] == {"hidden": 16}
    assert manifest["resize"]["a"]["out_features"] == 8 and manifest["resize"]["b"]["out_features"] == 12
