"""``prune --latency``: original vs pruned timed on torch eager and ONNX Runtime, into report.json,
the terminal summary and the HTML report."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from helpers import ROOT

from prunectl.cli import cli
from prunectl.measure.latency import interleaved
from prunectl.views.html_report import render_report


def test_prune_latency_times_both_models_on_both_runtimes(checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["prune", str(checkpoints["dwsep"]), "--spec",
                                      str(ROOT / "fixtures/specs/dwsep.json"),
                                      "--rate", "0.5", "-o", str(out), "--latency", "--latency-threads", "1"])
    assert result.exit_code == 0, result.output
    latency = json.loads((out / "report.json").read_text())["latency"]
    assert latency["threads"] == 1 and latency["runtime"] == "onnxruntime"
    for runtime in ("torch", "onnxruntime"):
        timed = latency[runtime]
        for side in ("before", "after"):
            stats = timed[side]
            assert stats["runs"] >= 15
            assert 0 < stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
        assert timed["speedup"] == round(timed["before"]["median_ms"] / timed["after"]["median_ms"], 3)
        assert f"latency ({runtime})" in result.output
    assert latency["before"] == latency["onnxruntime"]["before"]["median_ms"]
    page, _ = render_report(out)
    assert "latency (onnxruntime)" in page and f"{latency['before']:.3g}" in page
    assert CliRunner().invoke(cli, ["verify", str(out)]).exit_code == 0  # report.json is still checksummed


def test_latency_threads_below_one_is_a_usage_error(checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["prune", str(checkpoints["mlp"]), "--spec", str(ROOT / "fixtures/specs/mlp.json"),
                                      "-o", str(out), "--latency", "--latency-threads", "0"])
    assert result.exit_code == 3
    assert "--latency-threads: expected an integer >= 1, got 0" in result.output
    assert not out.exists()


def test_interleaved_timing_reports_order_statistics_per_function() -> None:
    calls = {"a": 0, "b": 0}

    def count(name: str) -> None:
        calls[name] += 1

    stats = interleaved([lambda: count("a"), lambda: count("b")], budget=0.01, warmup=2)
    assert [s["runs"] for s in stats] == [calls["a"] - 3, calls["b"] - 3]  # warm-up and the sizing round excluded
    assert all(s["runs"] >= 15 for s in stats)
