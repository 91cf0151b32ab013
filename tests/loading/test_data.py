"""--data: tensor files (.pt weights_only, .npz without pickle) and task names; clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from fixtures.make_checkpoints import FIXTURES
from prunectl.cli import cli
from prunectl.errors import SpecError
from prunectl.loading.data import load_data


def test_pt_dict_with_targets_gets_cross_entropy(tmp_path) -> None:
    path = tmp_path / "cal.pt"
    torch.save({"inputs": torch.randn(70, 4), "targets": torch.randint(0, 3, (70,))}, path)
    data = load_data(path)
    assert [len(x) for x, _ in data.batches] == [64, 6]
    assert data.has_targets and data.loss is F.cross_entropy


def test_pt_bare_tensor_and_npz_without_targets(tmp_path) -> None:
    torch.save(torch.randn(5, 3, 8, 8, dtype=torch.float64), tmp_path / "x.pt")
    data = load_data(tmp_path / "x.pt")
    assert data.batches[0][0].dtype == torch.float32 and not data.has_targets
    np.savez(tmp_path / "x.npz", inputs=np.ones((6, 2), dtype=np.float32), targets=np.zeros((6, 2), np.float32))
    npz = load_data(tmp_path / "x.npz")
    assert npz.has_targets and npz.loss is F.mse_loss


@pytest.mark.parametrize("content, message", [
    ({"inputs": torch.randn(4, 2), "targets": torch.zeros(3)}, "one entry per input"),
    ({"inputs": torch.randn(4, 2), "labels": torch.zeros(4)}, "unknown keys"),
    ([1, 2, 3], "expected a tensor or a dict"),
])
def test_bad_pt_files_are_spec_errors(content, message: str, tmp_path) -> None:
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(SpecError, match=message):
        load_data(path)


def test_npz_without_inputs_and_missing_and_unknown_sources(tmp_path) -> None:
    np.savez(tmp_path / "x.npz", images=np.ones(3))
    with pytest.raises(SpecError, match="no array named 'inputs'"):
        load_data(tmp_path / "x.npz")
    with pytest.raises(SpecError, match="no such file"):
        load_data(tmp_path / "missing.pt")
    with pytest.raises(SpecError, match="task name"):
        load_data("no-such-task")


def test_pickled_code_in_data_file_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"inputs": torch.randn(2, 2), "targets": object()}, path)
    with pytest.raises(SpecError, match="not a readable tensor file"):
        load_data(path)


def test_cli_needs_data_exit_3_and_criteria_command(checkpoints) -> None:
    runner = CliRunner()
    done = runner.invoke(cli, ["prune", str(checkpoints["small_mlp"]), "--spec", str(FIXTURES["small_mlp"][2]),
                               "--criterion", "apoz"])
    assert done.exit_code == 3
    assert "needs data" in done.output and "Traceback" not in done.output
    listed = runner.invoke(cli, ["criteria"])
    assert listed.exit_code == 0
    for name in ("l1", "l2", "fpgm", "bn_scale", "random", "lamp", "apoz", "taylor", "thinet"):
        assert name in listed.output


def test_cli_options_reach_the_report(checkpoints, tmp_path) -> None:
    data = tmp_path / "cal.npz"
    np.savez(data, inputs=np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32))
    runner = CliRunner()
    done = runner.invoke(cli, ["prune", str(checkpoints["small_mlp"]), "--spec", str(FIXTURES["small_mlp"][2]),
                               "--criterion", "apoz", "--data", str(data), "--global", "--steps", "2",
                               "--schedule", "agp", "--exclude", "fc2", "--target-params", "0.6"])
    assert done.exit_code == 0, done.output
    assert "target params" in done.output and "within 1%" in done.output
