"""Realised speed-up: do fewer MACs make the pruned model faster on this CPU?

    .venv/bin/python benchmarks/latency.py            # fixtures at batch 1 and 32, + resnet50 / mobilenet_v3_large
    .venv/bin/python benchmarks/latency.py --quick    # fixtures at batch 1 only (< 2 min)

For each model and rate (0.3, 0.5; l1, round_to 1) prunectl writes a bundle with ONNX; the
original is exported with the same exporter (prunectl.exporters.onnx.export_onnx). Latency:
- ONNX Runtime, CPUExecutionProvider, ``intra_op_num_threads`` fixed (default 1), sequential,
  all graph optimisations; torch eager under ``inference_mode`` with the same thread count.
- warm-up, then original and pruned runs *interleaved* (a burst of load from another process
  hits both), many runs, the median reported (p10/p90 in the JSON).
Next to it: the MACs and params reduction (prunectl's report). Where the ONNX Runtime
speed-up falls short of the MACs reduction (below 80% of it), the case gets a breakdown:
ONNX Runtime's per-operator kernel time (its profiler) and the time outside kernels, and in
torch eager the per-layer times (forward hooks) against each layer's own share of the work,
so the layers that do not shrink in time as they shrink in MACs are named.
The ``--round-to 8`` experiment prunes at rate 0.3 (widths otherwise not multiples of 8)
with round_to 1 and 8 and compares latency per MAC.
"""
from __future__ import annotations

import argparse
import bisect
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import print_table, tracing_available, write_results  # noqa: E402

from prunectl.measure.latency import ort_session, time_models  # noqa: E402

FIXTURES = ("resnet18", "vgg11_bn", "alexnet", "dwsep")
TORCHVISION = (("resnet50", 224), ("mobilenet_v3_large", 224))
RATES = (0.3, 0.5)
SHORTFALL = 0.8  # analyse a case when speed-up < 80% of the MACs reduction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fixtures at batch 1 only, shorter timing (< 2 min)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes (default 1)")
    parser.add_argument("--budget", type=float, help="seconds of timing per pair of models (default 2, quick 0.5)")
    args = parser.parse_args()
    budget = args.budget or (0.5 if args.quick else 2.0)
    torch.set_num_threads(args.threads)
    models: list[tuple[str, int, tuple[int, ...]]] = [(name, 32, (1, 32)) if not args.quick else (name, 32, (1,))
                                                     for name in FIXTURES]
    traced, why = tracing_available()
    if not args.quick:
        if traced:
            models += [(name, side, (1,)) for name, side in TORCHVISION]
        else:
            print(f"skipping torchvision models: {why}")
    cases, round_to = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, side, batches in models:
            print(f"{name}: pruning and timing", flush=True)
            case_rows, round_rows = _one_model(name, side, batches, Path(tmp) / name, args.threads, budget,
                                               round_to_experiment=not args.quick or name == "resnet18")
            cases += case_rows
            round_to += round_rows
    _report(cases, round_to, args.threads, budget, args.quick)


def _one_model(name: str, side: int, batches: tuple[int, ...], work: Path, threads: int, budget: float,
               round_to_experiment: bool) -> tuple[list[dict], list[dict]]:
    import prunectl
    from prunectl.exporters.onnx import export_onnx

    work.mkdir(parents=True)
    ckpt, original, options = _original(name, side, work)
    x1 = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    export_onnx(original, x1, work / "original.onnx")
    variants = [(rate, 1) for rate in RATES] + ([(0.3, 8), (0.3, 16)] if round_to_experiment else [])
    pruned = {}
    for rate, round_to in variants:
        pruned[rate, round_to] = prunectl.prune(ckpt, prunectl.PruneOptions(
            **options, rate=rate, round_to=round_to, onnx=True, output=work / f"r{rate}-{round_to}"))
    cases, round_rows = [], []
    for batch in batches:
        x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))
        # one interleaved session for the original and every variant: they all share the same
        # original measurement and the same bursts of load from other processes
        models = [original, *(result.model.eval() for result in pruned.values())]
        onnx_files = [work / "original.onnx", *(result.output / "model.onnx" for result in pruned.values())]
        timed = time_models(models, onnx_files, x, budget * len(models) / 2, threads)
        timed["ort"] = timed.pop("onnxruntime")
        for index, ((rate, round_to), result) in enumerate(pruned.items(), start=1):
            row = {"model": name, "input": [batch, 3, side, side], "rate": rate, "round_to": round_to,
                   "params": [result.report["params"]["before"], result.report["params"]["after"]],
                   "macs_batch1": [result.report["macs"]["before"], result.report["macs"]["after"]]}
            for runtime in ("ort", "torch"):
                detail = [timed[runtime][0], timed[runtime][index]]
                row[f"{runtime}_ms"] = [d["median_ms"] for d in detail]
                row[f"{runtime}_detail"] = detail
            row["macs_factor"] = round(row["macs_batch1"][0] / row["macs_batch1"][1], 3)
            row["params_factor"] = round(row["params"][0] / row["params"][1], 3)
            for runtime in ("ort", "torch"):
                row[f"{runtime}_speedup"] = round(row[f"{runtime}_ms"][0] / row[f"{runtime}_ms"][1], 3)
                # p10: the runs least disturbed by other processes (a shared machine preempts long runs)
                detail = row[f"{runtime}_detail"]
                row[f"{runtime}_speedup_p10"] = round(detail[0]["p10_ms"] / detail[1]["p10_ms"], 3)
                row[f"{runtime}_efficiency"] = round(row[f"{runtime}_speedup"] / row["macs_factor"], 3)
            if round_to == 1 and row["ort_efficiency"] < SHORTFALL:
                row["analysis"] = {
                    "ort_ops": _ort_breakdown(work / "original.onnx", result.output / "model.onnx", x, threads),
                    "torch_layers": _torch_layers(original, result.model, x)}
            (round_rows if round_to != 1 else cases).append(row)
            print(f"  rate {rate} round_to {round_to} batch {batch}: MACs x{row['macs_factor']:.2f}, "
                  f"ORT x{row['ort_speedup']:.2f}, torch x{row['torch_speedup']:.2f}", flush=True)
    return cases, round_rows


def _original(name: str, side: int, work: Path) -> tuple[Path, torch.nn.Module, dict]:
    """(checkpoint, original model in eval mode, the PruneOptions keys that select it)."""
    if name in FIXTURES:
        from fixtures.make_checkpoints import FIXTURES as SPECS
        from fixtures.make_checkpoints import make_model

        model = make_model(name).eval()
        options = {"spec": SPECS[name][2]}
    else:
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        options = {"model": f"torchvision:{name}", "input_shape": (1, 3, side, side)}
    ckpt = work / f"{name}.pt"
    torch.save(model.state_dict(), ckpt)
    return ckpt, model, options


def _ort_breakdown(original_onnx: Path, pruned_onnx: Path, x: torch.Tensor, threads: int, runs: int = 30) -> dict:
    """Per-operator kernel time (us per run) from ONNX Runtime's profiler, original vs pruned,
    and the rest of the run (session overhead: input/output copies, scheduling)."""
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tag, path in (("original", original_onnx), ("pruned", pruned_onnx)):
            session = ort_session(path, threads, profile_prefix=str(Path(tmp) / tag))
            feed = {"input": x.numpy()}
            for _ in range(5):
                session.run(None, feed)
            for _ in range(runs):
                session.run(None, feed)
            events = json.loads(Path(session.end_profiling()).read_text())
            result[tag] = _per_run_medians(events)
    return result


def _per_run_medians(events: list[dict]) -> dict:
    """Group the profiler's kernel events by the run (``model_run`` span) they fall in; the median
    run, per operator and in total, so that one preempted run does not skew the breakdown."""
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[5:]  # skip warm-up
    per_run: list[dict[str, float]] = [{} for _ in spans]
    starts = [begin for begin, _ in spans]
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        index = bisect.bisect_right(starts, event["ts"]) - 1
        if index >= 0 and event["ts"] <= spans[index][1]:
            op = event.get("args", {}).get("op_name", "?")
            per_run[index][op] = per_run[index].get(op, 0.0) + event["dur"]
    ops = {op for run in per_run for op in run}
    medians = {op: statistics.median(run.get(op, 0.0) for run in per_run) for op in ops}
    return {"ops_us": {k: round(v, 1) for k, v in sorted(medians.items(), key=lambda kv: -kv[1])},
            "kernels_us": round(statistics.median(sum(run.values()) for run in per_run), 1),
            "run_us": round(statistics.median(end - begin for begin, end in spans), 1), "runs": len(spans)}


@torch.inference_mode()
def _torch_layers(original: torch.nn.Module, pruned: torch.nn.Module, x: torch.Tensor, runs: int = 20,
                  top: int = 6) -> dict:
    """Per-leaf-module time in torch eager (forward hooks), original vs pruned. A layer's
    *expected* pruned time is its original time scaled by its own work ratio (MACs for
    conv/linear, output elements otherwise); ``excess_ms`` = measured - expected."""
    measured = [_layer_times(model, x, runs) for model in (original, pruned)]
    rows = []
    for name, (t0, w0) in measured[0]["layers"].items():
        if name not in measured[1]["layers"]:
            continue
        t1, w1 = measured[1]["layers"][name]
        expected = t0 * (w1 / w0) if w0 else t1
        rows.append({"layer": name, "original_ms": round(t0, 4), "pruned_ms": round(t1, 4),
                     "work_ratio": round(w1 / w0, 3) if w0 else None, "excess_ms": round(t1 - expected, 4)})
    rows.sort(key=lambda r: -r["excess_ms"])
    return {"total_ms": [measured[0]["total_ms"], measured[1]["total_ms"]],
            "in_layers_ms": [round(sum(t for t, _ in m["layers"].values()), 4) for m in measured],
            "worst_layers": rows[:top]}


def _layer_times(model: torch.nn.Module, x: torch.Tensor, runs: int) -> dict:
    starts: dict[str, float] = {}
    times: dict[str, list[float]] = {}
    work: dict[str, float] = {}
    handles = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue  # leaves only: containers would count their children twice

        def before(_m, _i, name=name):
            starts[name] = time.perf_counter()

        def after(m, _i, out, name=name):
            times.setdefault(name, []).append((time.perf_counter() - starts[name]) * 1e3)
            if isinstance(out, torch.Tensor):
                if isinstance(m, torch.nn.modules.conv._ConvNd):
                    work[name] = out.numel() * m.weight[0].numel()
                elif isinstance(m, torch.nn.Linear):
                    work[name] = out.numel() * m.in_features
                else:
                    work[name] = out.numel()

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    totals = []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            totals.append((time.perf_counter() - t0) * 1e3)
    finally:
        for handle in handles:
            handle.remove()
    return {"total_ms": round(statistics.median(totals), 4),
            "layers": {n: (statistics.median(t), work.get(n, 0.0)) for n, t in times.items()}}


def _report(cases: list[dict], round_rows: list[dict], threads: int, budget: float, quick: bool) -> None:
    from prunectl.views import charts as plots

    rows = [[c["model"], c["input"][0], c["rate"], f"x{c['params_factor']:.2f}", f"x{c['macs_factor']:.2f}",
             f"{c['ort_ms'][0]:.3f} -> {c['ort_ms'][1]:.3f}", f"x{c['ort_speedup']:.2f}",
             f"{c['torch_ms'][0]:.3f} -> {c['torch_ms'][1]:.3f}", f"x{c['torch_speedup']:.2f}",
             f"x{c['ort_speedup_p10']:.2f} / x{c['torch_speedup_p10']:.2f}", f"{100 * c['ort_efficiency']:.0f}%"]
            for c in cases]
    print_table(f"Realised speed-up ({threads} thread(s); median ms, original -> pruned)",
                ["model", "batch", "rate", "params", "MACs", "ORT ms", "ORT", "torch ms", "torch", "p10 ORT/torch",
                 "ORT/MACs"], rows,
                note="params / MACs: reduction factor (before / after); ORT, torch: speed-up (original / pruned "
                     "latency, medians); p10: the same from the fastest 10% of runs "
                     "(least disturbed by other processes); "
                     "ORT/MACs: how much of the MACs reduction ONNX Runtime turns into speed.")
    pairs = []
    for r1 in cases:
        variants = [r for r in round_rows if r["model"] == r1["model"] and r["input"] == r1["input"]
                    and r["rate"] == r1["rate"]]
        if r1["round_to"] != 1 or not variants:
            continue
        pair = {"model": r1["model"], "batch": r1["input"][0], "rate": r1["rate"], "original_ort_ms": r1["ort_ms"][0]}
        for row in [r1, *variants]:
            pair[f"round_to_{row['round_to']}"] = {
                "macs": row["macs_batch1"][1], "ort_ms": row["ort_ms"][1], "torch_ms": row["torch_ms"][1],
                "ort_speedup": row["ort_speedup"], "macs_factor": row["macs_factor"],
                "ort_us_per_mmac": round(1e3 * row["ort_ms"][1] / (row["macs_batch1"][1] * r1["input"][0] / 1e6), 3)}
        pairs.append(pair)
    steps = sorted({int(k.rsplit("_", 1)[1]) for p in pairs for k in p if k.startswith("round_to_")})
    print_table("--round-to at rate 0.3: MACs reduction and ONNX Runtime speed-up per choice",
                ["model", "batch", *(f"round_to {n}: MACs / ORT" for n in steps)],
                [[p["model"], p["batch"], *(f"x{p[f'round_to_{n}']['macs_factor']:.2f} / "
                                            f"x{p[f'round_to_{n}']['ort_speedup']:.2f}"
                                            if f"round_to_{n}" in p else "-" for n in steps)] for p in pairs],
                note="round_to N keeps channel counts that are multiples of N (fewer channels removed at the same "
                     "rate, so a smaller MACs reduction); ONNX Runtime's blocked (NCHWc) convolutions want multiples "
                     "of 8 (AVX2) or 16 (AVX-512).")
    for c in cases:
        if "analysis" in c:
            _print_analysis(c)
    categories = [f"{c['model']} b{c['input'][0]} r{c['rate']}" for c in cases]
    png = plots.grouped_bars(categories, {"MACs reduction": [c["macs_factor"] for c in cases],
                                          "ONNX Runtime speed-up": [c["ort_speedup"] for c in cases],
                                          "torch eager speed-up": [c["torch_speedup"] for c in cases]},
                             "factor (x)", f"MACs reduction vs realised speed-up ({threads} CPU thread)",
                             reference=1.0)
    path = write_results("latency", {"threads": threads, "timing_budget_s": budget, "shortfall_threshold": SHORTFALL,
                                     "cases": cases, "round_to": pairs}, png, quick)
    if pairs:
        path.with_name(path.stem + "-round_to.png").write_bytes(_round_to_chart(pairs, steps))
    print(f"wrote {path}")


def _round_to_chart(pairs: list[dict], steps: list[int]) -> bytes:
    from prunectl.views import charts as plots

    series = {f"round_to {n}": [p.get(f"round_to_{n}", {}).get("ort_speedup", float("nan")) for p in pairs]
              for n in steps}
    series["MACs reduction (round_to 1)"] = [p["round_to_1"]["macs_factor"] for p in pairs]
    return plots.grouped_bars([f"{p['model']} b{p['batch']}" for p in pairs], series, "ONNX Runtime speed-up (x)",
                              "Rate 0.3: ONNX Runtime speed-up by --round-to", reference=1.0)


def _print_analysis(case: dict) -> None:
    from rich.console import Console

    console = Console(width=200)
    ort, layers = case["analysis"]["ort_ops"], case["analysis"]["torch_layers"]
    console.print(f"[bold]{case['model']} batch {case['input'][0]} rate {case['rate']}[/bold]: "
                  f"ORT x{case['ort_speedup']:.2f} "
                  f"for MACs x{case['macs_factor']:.2f}")
    for tag in ("original", "pruned"):
        o = ort[tag]
        outside = o["run_us"] - o["kernels_us"]
        top = ", ".join(f"{op} {us:.0f}" for op, us in list(o["ops_us"].items())[:5])
        console.print(f"  ORT {tag}: run {o['run_us']:.0f} us, kernels {o['kernels_us']:.0f} us, outside kernels "
                      f"{outside:.0f} us ({100 * outside / o['run_us']:.0f}%); top ops (us): {top}")
    total, inside = layers["total_ms"], layers["in_layers_ms"]
    console.print(f"  torch eager: {total[0]:.3f} -> {total[1]:.3f} ms, of which in leaf modules {inside[0]:.3f} -> "
                  f"{inside[1]:.3f} ms (the rest is Python dispatch between modules)")
    for row in layers["worst_layers"][:4]:
        console.print(f"    {row['layer']}: {row['original_ms']:.4f} -> {row['pruned_ms']:.4f} ms, work x"
                      f"{row['work_ratio']}, {row['excess_ms'] * 1e3:.0f} us more than its work predicts")


if __name__ == "__main__":
    main()
