"""``prunectl report``: the self-contained HTML page, its PNGs, history.json, and a real browser."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import ROOT

import prunectl
from prunectl.cli import cli
from prunectl.views.html_report import render_report, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY = [{"step": 0, "params": 701466, "macs": 35049472, "accuracy": 0.931},
           {"step": 1, "params": 176402, "macs": 8870912, "accuracy": 0.915, "rate": 0.5, "note": "fine-tuned"}]


@pytest.fixture(scope="module")
def bundle(checkpoints, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "bundle"
    prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(
        spec=ROOT / "fixtures/specs/resnet18.json", rate=0.5, output=out, onnx=True))
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in bundle.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def test_page_shows_totals_checks_widths_and_files(bundle: Path) -> None:
    page, images = render_report(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = json.loads((bundle / "report.json").read_text())
    assert page.startswith("<!DOCTYPE html>")
    # totals: the report's own numbers, as the page prints them
    params = report["params"]
    assert f"{100 * (1 - params['after'] / params['before']):.1f}% smaller" in page
    assert "MACs" in page and "size" in page
    # checks: the manifest's recorded errors, both judged ok
    assert f"{manifest['verify']['soft_vs_hard_max_abs']:.3g}" in page
    assert f"{manifest['onnx']['max_abs']:.3g}" in page
    assert page.count('class="ok">ok</td>') == 2
    # every layer in the table; every file with its digest, re-checked now
    for layer in report["layers"]:
        assert f'<td class="mono">{layer["name"]}</td>' in page
    for name, digest in manifest["files"].items():
        assert name in page and digest in page
    assert page.count('<span class="ok">ok</span>') == len(manifest["files"])
    # self-contained: the chart is embedded, nothing is fetched
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 1 and base64.b64decode(embedded[0]) == images["report-widths.png"]
    assert images["report-widths.png"].startswith(PNG_MAGIC)
    assert not re.search(r'(src|href)="(https?:|//)', page)
    assert "Accuracy vs size" not in page  # no history.json in this bundle


def test_same_bundle_gives_the_same_bytes(bundle: Path) -> None:
    assert render_report(bundle) == render_report(bundle)


def test_history_adds_the_accuracy_plot(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    (copy / "history.json").write_text(json.dumps(HISTORY))
    (tmp_path / "out").mkdir()
    written = write_report(copy, tmp_path / "out" / "page.html")
    assert [p.name for p in written.images] == ["page-widths.png", "page-history.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in written.images)
    page = written.html.read_text()
    assert "Accuracy vs size" in page and "fine-tuned" in page and "0.915" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2


def test_report_inside_the_bundle_keeps_it_verifiable(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    written = write_report(copy)  # default: BUNDLE/report.html, PNGs beside it
    assert written.html == copy / "report.html" and all(p.parent == copy for p in written.images)
    assert prunectl.verify(copy)["checksums"] == "ok"


@pytest.mark.parametrize("history, fragment", [
    ({"step": 0}, "expected a JSON list"),
    ([{"step": 0, "params": 1, "macs": 1}], "[0].accuracy: missing"),
    ([{"step": 0, "params": 1.5, "macs": 1, "accuracy": 1}], "[0].params: expected an integer"),
    ([{"step": 0, "params": 1, "macs": 1, "accuracy": 1, "loss": 2}], "[0].loss: unknown key"),
])
def test_bad_history_is_exit_5_naming_the_key(bundle: Path, tmp_path: Path, history, fragment: str) -> None:
    copy = _copy(bundle, tmp_path)
    (copy / "history.json").write_text(json.dumps(history))
    result = CliRunner().invoke(cli, ["report", str(copy)])
    assert result.exit_code == 5, result.output
    assert "history.json" in result.output and fragment in result.output
    assert not (copy / "report.html").exists()


def test_modified_file_is_flagged(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    data = bytearray((copy / "model.pt").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.pt").write_bytes(bytes(data))
    page, _ = render_report(copy)
    assert page.count("MISMATCH") == 1


def test_cli_writes_page_and_pngs(bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", str(bundle), "-o", str(target), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert listed["html"] == str(target) and target.read_text().startswith("<!DOCTYPE html>")
    assert [Path(p).name for p in listed["images"]] == ["r-widths.png"]
    not_a_bundle = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert not_a_bundle.exit_code == 5 and "not a prunectl bundle" in not_a_bundle.output


def test_renders_in_headless_chromium(bundle: Path, tmp_path: Path) -> None:
    """The page as a browser draws it: the embedded chart's bars (AFTER_COLOUR) are on screen."""
    from benchmarks.report_screenshot import chromium_screenshot, find_chromium

    if find_chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    import matplotlib.image

    from prunectl.views.charts import AFTER_COLOUR

    written = write_report(bundle, tmp_path / "page.html")
    shot = tmp_path / "shot.png"
    chromium_screenshot(written.html, shot)
    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int)
    bar = [int(AFTER_COLOUR[i:i + 2], 16) for i in (1, 3, 5)]
    bar_pixels = (abs(pixels - bar).sum(-1) <= 6).sum()
    assert bar_pixels > 2000, "the embedded width chart did not render"


def test_benchmark_charts_are_pngs() -> None:
    """The chart helpers the benchmarks use: PNG bytes, NaN points (a tool that failed) tolerated."""
    from prunectl.views import charts as plots

    bars = plots.grouped_bars(["a", "b"], {"x": [1.0, 2.0], "y": [float("nan"), 1.5]}, "factor", "t", reference=1.0)
    lines = plots.line_chart([1, 2, 3], {"x": [1.0, 2.0, 4.0], "y": [1.0, float("nan"), 3.0]}, "p", "s", "t",
                             labels=["a", "b", "c"])
    assert bars.startswith(PNG_MAGIC) and lines.startswith(PNG_MAGIC)
