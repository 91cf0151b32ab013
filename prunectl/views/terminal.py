"""Terminal views (rich): the per-layer width table, totals, where the files went."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _human(n: int | float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def _ratio(pair: dict[str, Any]) -> str:
    if not pair.get("before"):
        return "-"
    return (f"{_human(pair['before'])} -> {_human(pair['after'])} "
            f"({100 * (1 - pair['after'] / pair['before']):.1f}% smaller)")


def prune_summary(console: Console, report: dict[str, Any], manifest: dict[str, Any], output: str | None,
                  timings: dict[str, float]) -> None:
    table = Table(title="Widths per layer", title_justify="left")
    for column, justify in (("layer", "left"), ("type", "left"), ("before", "right"), ("after", "right"),
                            ("kept", "right")):
        table.add_column(column, justify=justify)
    for layer in report["layers"]:
        kept = layer["after"] / layer["before"] if layer["before"] else 1
        style = None if layer["after"] != layer["before"] else "dim"
        table.add_row(layer["name"], layer["type"], str(layer["before"]), str(layer["after"]), f"{100 * kept:.0f}%",
                      style=style)
    console.print(table)
    totals = Table.grid(padding=(0, 2))
    totals.add_row("params", _ratio(report["params"]))
    language_model = report.get("language_model")
    if language_model:
        totals.add_row("params w/o embeddings", _ratio(language_model["params_without_embeddings"]))
        cache = language_model.get("kv_cache_bytes_per_token")
        if cache:
            totals.add_row("KV cache", f"{cache['before']} -> {cache['after']} bytes per token")
    totals.add_row("MACs", _ratio(report["macs"]))
    totals.add_row("size", _ratio(report["size_bytes"]).replace("K", "KB").replace("M", "MB").replace("G", "GB"))
    check = manifest.get("verify", {})
    totals.add_row("soft vs hard", f"max |diff| {check.get('soft_vs_hard_max_abs', 0):.3g} "
                   f"(in {check.get('precision', 'float32')}, tolerance {check.get('tolerance', 0):g}, "
                   f"{check.get('inputs', 0) + check.get('data_inputs', 0)} inputs) [green]ok[/green]")
    if "onnx" in manifest:
        totals.add_row("ONNX vs torch", f"max |diff| {manifest['onnx']['max_abs']:.3g} "
                       f"(atol {manifest['onnx']['atol']:g}, opset {manifest['onnx']['opset']}) [green]ok[/green]")
    for runtime in ("onnxruntime", "torch"):
        timed = report.get("latency", {}).get(runtime)
        if timed:
            totals.add_row(f"latency ({runtime})",
                           f"{timed['before']['median_ms']:.3g} -> {timed['after']['median_ms']:.3g} ms, "
                           f"x{timed['speedup']:.2f} (median of {timed['after']['runs']}, "
                           f"{report['latency']['threads']} thread(s))")
    compensation = report.get("bias_compensation")
    if compensation is not None:  # --bias-compensation: how many readers took the removed inputs' means
        flags = ", ".join(f"{flag}: true" for flag in compensation.get("args", {}))
        totals.add_row("bias compensation", f"{len(compensation['readers'])} readers"
                       f"{f' ({flags} in the config)' if flags else ''}, {len(compensation['uncompensated'])} "
                       "left (report.json says why)")
    pinned = report.get("traced", {}).get("pinned", {})
    if pinned:  # a traced spec: which layers keep every channel, and why (the first few)
        shown = "; ".join(f"{name}: {reason}" for name, reason in list(pinned.items())[:3])
        more = f" (+{len(pinned) - 3} more in report.json)" if len(pinned) > 3 else ""
        totals.add_row("not pruned", f"{len(pinned)} layers: {shown}{more}")
    # groups the criterion had nothing to score by (bn_scale: no norm reached); the API warns instead
    unscored = [group["layers"][0] for group in report.get("groups", []) if group.get("layers")
                and any(": criterion '" in reason for reason in group.get("pinned_by", []))]
    if unscored:
        more = f" (+{len(unscored) - 5} more in report.json)" if len(unscored) > 5 else ""
        totals.add_row("not scored", f"{len(unscored)} groups kept whole, the criterion cannot score them: "
                       f"{', '.join(unscored[:5])}{more}")
    for note in report.get("selection", {}).get("aligned", []):  # widths rounded for a stock config
        totals.add_row("aligned", note)
    perplexity = report.get("perplexity")
    if perplexity:
        totals.add_row("perplexity", f"{perplexity['before']:.4g} -> {perplexity['after']:.4g} "
                       f"({protocol(perplexity['protocol'])})")
    hf = manifest.get("hf")
    if hf:
        totals.add_row("hf/", f"written ({hf['config']})" if hf.get("written") else f"not written: {hf.get('reason')}")
    totals.add_row("time", ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in timings.items()))
    if output:
        totals.add_row("bundle", f"{output}/ ({', '.join(sorted(manifest.get('files', {})) + ['manifest.json'])})")
    console.print(totals)


def protocol(result: dict[str, Any]) -> str:
    """How a perplexity was measured, in one line."""
    return (f"{result['tokens']} tokens of {result['source']}, windows of {result['seq_len']}, stride "
            f"{result['stride']}, {result['windows']} windows, {result['dtype']}")


def perplexity_line(console: Console, result: dict[str, Any]) -> None:
    console.print(f"perplexity {result['perplexity']:.4f} ({protocol(result)})")


def info_table(console: Console, info: dict[str, Any]) -> None:
    table = Table(title=f"{info['path']} ({info['factory']})", title_justify="left")
    for column, justify in (("layer", "left"), ("type", "left"), ("width", "right")):
        table.add_column(column, justify=justify)
    for layer in info["layers"]:
        table.add_row(layer["name"], layer["type"], str(layer["width"]))
    console.print(table)
    console.print(f"params {_human(info['params'])}   MACs {_human(info['macs'])}   "
                  f"size {_human(info['size_bytes'])}B   input {info['input']['shape']}")


def verify_summary(console: Console, result: dict[str, Any]) -> None:
    console.print(f"[green]ok[/green] {result['bundle']}: checksums of {', '.join(result['files'])} match, "
                  "rebuilt and loaded strictly, forward pass finite"
                  + (f", ONNX vs torch max |diff| {result['onnx_max_abs']:.3g}" if "onnx_max_abs" in result else ""))


def traced_summary(console: Console, traced: Any, output: str) -> None:
    """What ``prunectl spec`` wrote, and which layers it left unpruned and why."""
    spec = traced.spec
    console.print(f"[green]ok[/green] {output}: {len(spec.layers)} layers traced, "
                  f"{len(traced.pinned)} marked \"prune\": false")
    for name, reason in traced.pinned.items():
        console.print(f"  {name}: {reason}", highlight=False, markup=False)


def criteria_table(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="Criteria", title_justify="left")
    for column in ("name", "needs data", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], "yes" if row["needs_data"] else "no", row["description"])
    console.print(table)


def choice_summary(console: Console, report: dict[str, Any]) -> None:
    """The achieved target and, in unstructured mode, the sparsity (after the width table)."""
    if "target" in report:
        target = report["target"]
        mark = "[green]within 1%[/green]" if target["within_1_percent"] else "[yellow]not within 1%[/yellow]"
        console.print(f"target {target['kind']}: kept {target['achieved']:.4f} of the original "
                      f"(goal {target['goal']:g}, {mark})")
    if "sparsity" in report:
        sparsity = report["sparsity"]
        table = Table(title="Unstructured sparsity", title_justify="left")
        for column, justify in (("layer", "left"), ("zeros", "right"), ("weights", "right"), ("sparsity", "right")):
            table.add_column(column, justify=justify)
        for name, layer in sparsity["layers"].items():
            table.add_row(name, str(layer["zeros"]), str(layer["weights"]), f"{100 * layer['sparsity']:.1f}%")
        total = sparsity["pruned_layers"]
        table.add_row("total (pruned layers)", str(total["zeros"]), str(total["weights"]),
                      f"{100 * total['sparsity']:.1f}%", style="bold")
        console.print(table)
        console.print(f"whole model: {100 * sparsity['model']['sparsity']:.1f}% of {sparsity['model']['params']} "
                      "parameters are zero (files stay dense)")
