"""``prunectl report``: one self-contained HTML page that shows what a prune did to a bundle.

The page has inline CSS and its charts embedded as base64 PNGs, so it can be mailed or
attached to a CI run as one file; the same PNGs are also written beside it for slides and
READMEs. It shows: the per-layer widths before/after (chart and table), params/MACs/size
totals, the soft-vs-hard and ONNX-vs-torch errors recorded in the manifest, every file with
its size and sha256 (re-computed now, so a modified file shows up), and, when the bundle
holds a ``history.json``, the accuracy-vs-size curve of the run that produced it.

``history.json`` (written by an iterative/``auto`` run, one entry per step) is read and
validated by ``prunectl.formats.history``; ``accuracy`` is printed as given (any scale).

The page is deterministic (no timestamps), so the same bundle gives the same bytes.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, SpecError
from ..formats.checksums import file_sha256
from ..formats.history import HISTORY_NAME, read_history
from ..formats.manifest import MANIFEST_NAME, Manifest, read_manifest
from ..formats.strict_json import read_json
from . import charts

REPORT_NAME = "report.json"

_CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1d2330;margin:0;background:#f5f6f8}
main{max-width:1080px;margin:0 auto;padding:24px 28px;background:#fff;min-height:100vh}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e3e6ea;padding-bottom:4px}
.sub{color:#5b6372;margin:0 0 16px}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
table{border-collapse:collapse;margin:6px 0 10px}th,td{padding:4px 10px;border-bottom:1px solid #eceef1;text-align:left}
th{background:#f0f2f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:14px;flex-wrap:wrap}\
.card{border:1px solid #e3e6ea;border-radius:8px;padding:10px 16px;min-width:200px}
.card b{font-size:20px;display:block}.card span{color:#5b6372;font-size:12px}
.ok{color:#1c7c3c;font-weight:600}.bad{color:#b42318;font-weight:600}.dim{color:#8a91a0}
img{max-width:100%;height:auto;border:1px solid #eceef1}details{margin:6px 0}
"""


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    images: tuple[Path, ...]


def write_report(bundle: str | Path, output: str | Path | None = None) -> ReportFiles:
    """Render ``bundle``'s report to ``output`` (default ``BUNDLE/report.html``), PNGs beside it."""
    bundle = Path(bundle)
    output = Path(output) if output is not None else bundle / "report.html"
    page, images = render_report(bundle, image_prefix=output.stem)
    written = []
    try:
        for name, data in images.items():
            path = output.with_name(name)
            path.write_bytes(data)
            written.append(path)
        output.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{output}: cannot write the report ({exc.strerror or exc})") from None
    return ReportFiles(output, tuple(written))


def render_report(bundle: str | Path, image_prefix: str = "report") -> tuple[str, dict[str, bytes]]:
    """The HTML page (str) and its PNGs (file name -> bytes) for ``bundle``; writes nothing."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    report = read_json(bundle / REPORT_NAME, CheckpointError)
    if not isinstance(report, dict) or not isinstance(report.get("layers"), list):
        raise CheckpointError(f"{bundle / REPORT_NAME}: layers: expected a list of per-layer widths")
    history = read_history(bundle / HISTORY_NAME) if (bundle / HISTORY_NAME).exists() else None
    images = {f"{image_prefix}-widths.png": charts.width_chart(report["layers"])}
    if history:
        images[f"{image_prefix}-history.png"] = charts.history_chart(history)
    sections = [_header(bundle, manifest), _totals(report), _checks(manifest),
                _widths(report, images[f"{image_prefix}-widths.png"]), _groups(report),
                _history(history, images.get(f"{image_prefix}-history.png")), _files(bundle, manifest),
                _versions(manifest)]
    body = "\n".join(section for section in sections if section)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>prunectl report: {_e(bundle.name)}</title><style>{_CSS}</style></head>\n"
            f"<body><main>\n{body}\n</main></body></html>\n")
    return page, images


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}"


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _header(bundle: Path, manifest: Manifest) -> str:
    extra = manifest.extra
    source = extra.get("source", {})
    facts = [("factory", manifest.rebuild.get("factory")), ("criterion", extra.get("criterion")),
             ("rate", extra.get("rate")), ("round_to", extra.get("round_to")),
             ("input", f"{manifest.input.get('shape')} {manifest.input.get('dtype')}"),
             ("source", f"{source.get('path', '?')} (sha256 {str(source.get('sha256', '?'))[:16]}…)")]
    line = " · ".join(f"{name} <code>{_e(value)}</code>" for name, value in facts if value is not None)
    return f"<h1>prunectl report: {_e(bundle.name)}</h1>\n<p class=\"sub\">{line}</p>"


def _totals(report: dict[str, Any]) -> str:
    cards = []
    for key, label, unit in (("params", "parameters", ""), ("macs", "MACs", ""), ("size_bytes", "size", "B")):
        pair = report.get(key)
        if not isinstance(pair, dict) or not pair.get("before"):
            continue
        before, after = pair["before"], pair["after"]
        cards.append(f"<div class=\"card\"><span>{label}</span><b>{_human(before)}{unit} → {_human(after)}{unit}</b>"
                     f"<span>{100 * (1 - after / before):.1f}% smaller · ×{before / after:.2f} fewer</span></div>"
                     if after else "")
    latency = report.get("latency")  # present when prune --latency measured it
    if isinstance(latency, dict) and latency.get("before") and latency.get("after"):
        cards.append(f"<div class=\"card\"><span>latency ({_e(latency.get('runtime', ''))})</span>"
                     f"<b>{latency['before']:.3g} → {latency['after']:.3g} ms</b>"
                     f"<span>×{latency['before'] / latency['after']:.2f} faster</span></div>")
    return "<h2>Totals</h2>\n<div class=\"cards\">" + "".join(cards) + "</div>"


def _checks(manifest: Manifest) -> str:
    rows = []
    check = manifest.extra.get("verify")
    if isinstance(check, dict):
        error, tolerance = check.get("soft_vs_hard_max_abs"), check.get("tolerance")
        reference = check.get("reference_max_abs")
        bound = tolerance * max(1.0, reference) if isinstance(tolerance, (int, float)) and isinstance(
            reference, (int, float)) else tolerance
        good = isinstance(error, (int, float)) and isinstance(bound, (int, float)) and error <= bound
        rows.append(("soft vs hard (masked original vs pruned)", _num(error),
                     f"≤ {_num(tolerance)} × max(1, |out| = {_num(reference)}) in "
                     f"{_e(check.get('precision', 'float32'))} over {_e(check.get('inputs', '?'))} inputs, "
                     f"seed {_e(check.get('seed', '?'))}", good))
    onnx = manifest.extra.get("onnx")
    if isinstance(onnx, dict):
        error, bound = onnx.get("max_abs"), onnx.get("bound", onnx.get("atol"))
        good = isinstance(error, (int, float)) and isinstance(bound, (int, float)) and error <= bound
        rows.append(("ONNX Runtime vs torch", _num(error),
                     f"≤ {_num(bound)}: max({_num(onnx.get('atol'))} × max(1, |out|), "
                     f"{_e(onnx.get('noise_factor', '-'))} × torch's float32 error "
                     f"{_num(onnx.get('torch_float32_error'))}) (opset {_e(onnx.get('opset'))}, "
                     f"{_e(onnx.get('exporter', '?'))} exporter)", good))
    if not rows:
        return "<h2>Checks</h2><p class=\"dim\">no verification recorded in the manifest</p>"
    body = "".join(f"<tr><td>{_e(name)}</td><td class=\"num mono\">{value}</td><td>{bound}</td>"
                   f"<td class=\"{'ok' if good else 'bad'}\">{'ok' if good else 'FAILED'}</td></tr>"
                   for name, value, bound, good in rows)
    if "model.onnx" not in manifest.files:
        body += "<tr><td>ONNX Runtime vs torch</td><td colspan=\"3\" class=\"dim\">no model.onnx " \
                "(prunectl export BUNDLE --onnx adds it)</td></tr>"
    return ("<h2>Checks</h2>\n<table><tr><th>comparison</th><th>max |diff|</th><th>bound</th><th></th></tr>"
            f"{body}</table>")


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else _e(value)


def _widths(report: dict[str, Any], chart: bytes) -> str:
    rows = []
    for layer in report["layers"]:
        before, after = layer.get("before"), layer.get("after")
        kept = f"{100 * after / before:.0f}%" if isinstance(before, int) and before and isinstance(after, int) else "-"
        style = " class=\"dim\"" if before == after else ""
        rows.append(f"<tr{style}><td class=\"mono\">{_e(layer.get('name'))}</td><td>{_e(layer.get('type'))}</td>"
                    f"<td class=\"num\">{_e(before)}</td><td class=\"num\">{_e(after)}</td>"
                    f"<td class=\"num\">{kept}</td></tr>")
    changed = sum(1 for layer in report["layers"] if layer.get("before") != layer.get("after"))
    return (f"<h2>Widths per layer</h2>\n<p>{changed} of {len(report['layers'])} layers pruned "
            f"(unchanged layers are grey).</p>\n{_img(chart, 'output channels per layer, before and after')}\n"
            "<details><summary>table</summary><table><tr><th>layer</th><th>type</th><th>before</th><th>after</th>"
            f"<th>kept</th></tr>{''.join(rows)}</table></details>")


def _groups(report: dict[str, Any]) -> str:
    groups = report.get("groups")
    if not isinstance(groups, list) or not groups:
        return ""
    rows = "".join(
        f"<tr><td class=\"mono\">{_e(', '.join(map(str, g.get('layers', []))))}</td>"
        f"<td class=\"num\">{_e(g.get('size'))}"
        f"</td><td class=\"num\">{_e(g.get('kept'))}</td>"
        f"<td>{_e(', '.join(map(str, g.get('pinned_by', []))))}</td></tr>"
        for g in groups if isinstance(g, dict))
    return (f"<h2>Coupled channel groups</h2>\n<details><summary>{len(groups)} groups (layers that keep the same "
            "channel indices)</summary><table><tr><th>layers</th><th>channels</th><th>kept</th><th>pinned by</th></tr>"
            f"{rows}</table></details>")


def _history(history: list[dict[str, Any]] | None, chart: bytes | None) -> str:
    if not history or chart is None:
        return ""
    rows = "".join(f"<tr><td class=\"num\">{_e(s['step'])}</td><td class=\"num\">{_human(s['params'])}</td>"
                   f"<td class=\"num\">{_human(s['macs'])}</td><td class=\"num\">{_e(s['accuracy'])}</td>"
                   f"<td>{_e(s.get('note', ''))}</td></tr>" for s in history)
    return (f"<h2>Accuracy vs size ({HISTORY_NAME})</h2>\n{_img(chart, 'accuracy against parameters per step')}\n"
            "<table><tr><th>step</th><th>params</th><th>MACs</th><th>accuracy</th><th>note</th></tr>"
            f"{rows}</table>")


def _files(bundle: Path, manifest: Manifest) -> str:
    rows = []
    for name, digest in sorted(manifest.files.items()):
        path = bundle / name
        if not path.is_file():
            size, status = "-", "<span class=\"bad\">missing</span>"
        else:
            size = _human(path.stat().st_size) + "B"
            status = "<span class=\"ok\">ok</span>" if file_sha256(path) == digest else \
                "<span class=\"bad\">MISMATCH (modified since prune)</span>"
        rows.append(f"<tr><td class=\"mono\">{_e(name)}</td><td class=\"num\">{size}</td>"
                    f"<td class=\"mono\">{_e(digest)}</td><td>{status}</td></tr>")
    size = _human((bundle / MANIFEST_NAME).stat().st_size) + "B"
    rows.append(f"<tr><td class=\"mono\">{MANIFEST_NAME}</td><td class=\"num\">{size}</td>"
                "<td class=\"dim\">(holds the digests above)</td><td></td></tr>")
    return ("<h2>Files</h2>\n<table><tr><th>file</th><th>size</th><th>sha256 (manifest)</th><th>now</th></tr>"
            f"{''.join(rows)}</table>")


def _versions(manifest: Manifest) -> str:
    items = " · ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(manifest.versions.items()))
    return f"<p class=\"dim\">written by {items}</p>" if items else ""
