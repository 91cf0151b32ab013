"""Tool speed: prunectl against Torch-Pruning 1.6 on the same checkpoints, in one run.

    .venv/bin/python benchmarks/tool_speed.py            # resnet50, mobilenet_v3_large, vit_b_16 @224
    .venv/bin/python benchmarks/tool_speed.py --quick    # resnet18, mobilenet_v3_small @64 (< 2 min)
    .venv/bin/python benchmarks/tool_speed.py --whole-process   # what a user waits for (below)

``--whole-process`` times whole processes, as a user waits for them: ``prunectl prune CKPT --model
torchvision:NAME --rate 0.5 -q -o OUT`` (imports, load, trace, score, cut, the float64 proof,
the bundle written) against a Torch-Pruning script that imports the same libraries, loads the
same state_dict, runs MetaPruner with L1 and saves the pruned state_dict; wall time and the
child's peak RSS, median of interleaved runs (the order alternates). Results:
docs/results/bench/tool_speed_whole.json (+ .png).

What is timed, for both tools, is the same job: from a state_dict file on disk to a pruned
model in memory that has been checked, with params and MACs counted before and after.
- prunectl: ``prunectl.prune(ckpt, PruneOptions(model="torchvision:NAME", rate=0.5,
  input_shape=..., skip_unsupported=True))``: load, trace (automatic spec), l1 scores,
  soft + hard pruning, soft == hard verification on 3 inputs, rebuild proof, params/MACs.
  ``skip_unsupported`` leaves channels behind ops prunectl cannot cut (ViT's class-token
  concat) unpruned instead of failing, as ``benchmarks/zoo.py`` does.
- Torch-Pruning: build the torchvision model, load the same state_dict, ``MetaPruner``
  (its ``DependencyGraph``) with ``MagnitudeImportance(p=1)`` (L1, like prunectl's l1),
  ``pruning_ratio=0.5``, the classifier ignored, ``num_heads`` for attention; ``step()``;
  then a forward pass (finite, right shape) and ``tp.utils.count_ops_and_params`` before and
  after. Torch-Pruning has no soft-vs-hard check; that work is prunectl's alone.
Each (tool, model, repeat) runs in a fresh subprocess; wall time is the median over repeats,
peak memory is that subprocess's VmHWM minus its peak after imports (the libraries).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import human, peak_rss_mb, print_table, run_child, tracing_available, write_results  # noqa: E402

FULL = [("resnet50", 224), ("mobilenet_v3_large", 224), ("vit_b_16", 224)]
QUICK = [("resnet18", 64), ("mobilenet_v3_small", 64)]
TOOLS = ("prunectl", "torch_pruning")
RATE = 0.5


def child(tool: str, name: str, ckpt: str, side: int, rate: float, threads: int) -> dict:
    """One measurement, in this fresh process; returns the JSON line the parent reads."""
    import torch
    import torchvision  # noqa: F401  (imported before the baseline: library memory is not the tool's)

    if tool == "torch_pruning":
        import torch_pruning  # noqa: F401
    else:
        import prunectl  # noqa: F401
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    baseline = peak_rss_mb()
    start = time.perf_counter()
    row = (_prunectl if tool == "prunectl" else _torch_pruning)(name, ckpt, (1, 3, side, side), rate)
    row["wall_s"] = round(time.perf_counter() - start, 3)
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    row["baseline_rss_mb"] = round(baseline, 1)
    row["tool_rss_mb"] = round(row["peak_rss_mb"] - baseline, 1)
    return row


def _prunectl(name: str, ckpt: str, shape: tuple[int, ...], rate: float) -> dict:
    import prunectl
    from prunectl.errors import PrunectlError

    try:
        # round_to 1: the same channel counts Torch-Pruning's default (no rounding) cuts
        result = prunectl.prune(ckpt, prunectl.PruneOptions(model=f"torchvision:{name}", rate=rate, input_shape=shape,
                                                            round_to=1, skip_unsupported=True))
    except PrunectlError as exc:
        return {"status": f"{type(exc).__name__}: {str(exc)[:300]}"}
    report = result.report
    return {"status": "ok", "stages_s": result.timings,
            "params": [report["params"]["before"], report["params"]["after"]],
            "macs": [report["macs"]["before"], report["macs"]["after"]],
            "pinned_layers": len(report.get("traced", {}).get("pinned", {}))}


def _torch_pruning(name: str, ckpt: str, shape: tuple[int, ...], rate: float) -> dict:
    import torch
    import torch_pruning as tp
    import torchvision

    stages = {}
    clock = time.perf_counter()
    model = torchvision.models.get_model(name, weights=None)
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    model.eval()
    example = torch.randn(shape)
    macs_before, params_before = tp.utils.count_ops_and_params(model, example)
    stages["load_count"] = round(time.perf_counter() - clock, 4)
    clock = time.perf_counter()
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    pruner = tp.pruner.MetaPruner(model, example, tp.importance.MagnitudeImportance(p=1), pruning_ratio=rate,
                                  ignored_layers=[classifier], num_heads=heads)
    stages["graph"] = round(time.perf_counter() - clock, 4)
    clock = time.perf_counter()
    pruner.step()
    stages["prune"] = round(time.perf_counter() - clock, 4)
    clock = time.perf_counter()
    with torch.no_grad():
        out = model(example)
    if out.shape[-1] != classifier.out_features or not bool(torch.isfinite(out).all()):
        return {"status": f"pruned model output is wrong: shape {tuple(out.shape)}"}
    macs_after, params_after = tp.utils.count_ops_and_params(model, example)
    stages["check_count"] = round(time.perf_counter() - clock, 4)
    return {"status": "ok", "stages_s": stages, "params": [int(params_before), int(params_after)],
            "macs": [int(macs_before), int(macs_after)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models at 64x64, one repeat (< 2 min)")
    parser.add_argument("--repeats", type=int, help="subprocess runs per tool and model (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads in every run (default 1: stable on a shared machine)")
    parser.add_argument("--child", nargs=6, metavar=("TOOL", "NAME", "CKPT", "SIDE", "RATE", "THREADS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--whole-process", action="store_true",
                        help="time whole processes: the prunectl command against a Torch-Pruning script")
    parser.add_argument("--tp-script", nargs=3, metavar=("NAME", "CKPT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tp_script:
        _tp_script(*args.tp_script)
        return
    if args.whole_process:
        _whole_process(QUICK if args.quick else FULL, args.repeats or (1 if args.quick else 3), args.quick)
        return
    if args.child:
        tool, name, ckpt, side, rate, threads = args.child
        print(json.dumps(child(tool, name, ckpt, int(side), float(rate), int(threads))))
        return
    ok, why = tracing_available()
    if not ok:
        print(f"prunectl cannot prune torchvision models without a spec yet: {why}; "
              "prunectl rows will report the error")
    models = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, side in models:
            ckpt = _checkpoint(name, Path(tmp))
            runs = {tool: [] for tool in TOOLS}
            for repeat in range(repeats):
                order = TOOLS if repeat % 2 == 0 else TOOLS[::-1]  # alternate: neither tool always goes first
                for tool in order:
                    row = run_child(Path(__file__), [tool, name, str(ckpt), str(side), str(RATE), str(args.threads)],
                                    timeout=1800)
                    runs[tool].append(row)
                    print(f"  {name} {tool} #{repeat + 1}: {row.get('status')} {row.get('wall_s', '')}s "
                          f"{row.get('tool_rss_mb', '')}MB", flush=True)
            results.append({"model": name, "input": [1, 3, side, side], "rate": RATE,
                            **{tool: _summary(rows) for tool, rows in runs.items()}})
    _report(results, repeats, args.quick, args.threads)


def _tp_script(name: str, ckpt: str, out: str) -> None:
    """What a Torch-Pruning user runs: load the state_dict, MetaPruner with L1 at the rate, save."""
    import torch
    import torch_pruning as tp
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    model.eval()
    example = torch.randn(1, 3, 224, 224)
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    pruner = tp.pruner.MetaPruner(model, example, tp.importance.MagnitudeImportance(p=1), pruning_ratio=RATE,
                                  ignored_layers=[classifier], num_heads=heads)
    pruner.step()
    torch.save(model.state_dict(), out)


def _timed(command: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of one child process, with its own rusage (os.wait4)."""
    import os
    import subprocess

    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    error = child.stderr.read().decode(errors="replace").strip().splitlines()
    child.stderr.close()
    ok = os.waitstatus_to_exitcode(status) == 0
    return {"status": "ok" if ok else f"exit {os.waitstatus_to_exitcode(status)}: {(error or [''])[-1][:200]}",
            "wall_s": round(wall, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def _whole_process(models: list[tuple[str, int]], repeats: int, quick: bool) -> None:
    from prunectl.views import charts as plots

    prunectl_bin = str(Path(sys.executable).with_name("prunectl"))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, _side in models:
            ckpt = _checkpoint(name, Path(tmp))
            commands = {
                "prunectl": [prunectl_bin, "prune", str(ckpt), "--model", f"torchvision:{name}", "--rate", str(RATE),
                             "-q", "-o", str(Path(tmp) / f"{name}-bundle")],
                "torch_pruning": [sys.executable, str(Path(__file__).resolve()), "--tp-script", name, str(ckpt),
                                  str(Path(tmp) / f"{name}-tp.pt")],
            }
            runs = {tool: [] for tool in TOOLS}
            for repeat in range(repeats):
                for tool in (TOOLS if repeat % 2 == 0 else TOOLS[::-1]):
                    row = _timed(commands[tool])
                    runs[tool].append(row)
                    print(f"  {name} {tool} #{repeat + 1}: {row['status']} {row['wall_s']}s {row['peak_rss_mb']}MB",
                          flush=True)
            summary = {}
            for tool, rows in runs.items():
                good = [r for r in rows if r["status"] == "ok"]
                summary[tool] = ({"status": "ok", "wall_s": round(statistics.median(r["wall_s"] for r in good), 3),
                                  "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in good), 1),
                                  "runs": rows} if good else {"status": rows[0]["status"], "runs": rows})
            p, t = summary["prunectl"], summary["torch_pruning"]
            both = p["status"] == t["status"] == "ok"
            results.append({"model": name, "rate": RATE, **summary,
                            "time_ratio_prunectl_over_tp": round(p["wall_s"] / t["wall_s"], 3) if both else None,
                            "memory_ratio_prunectl_over_tp": round(p["peak_rss_mb"] / t["peak_rss_mb"], 3)
                            if both else None})
    rows = [[r["model"], _fmt(r["prunectl"], "wall_s", "s"), _fmt(r["torch_pruning"], "wall_s", "s"),
             r["time_ratio_prunectl_over_tp"], _fmt(r["prunectl"], "peak_rss_mb", "MB"),
             _fmt(r["torch_pruning"], "peak_rss_mb", "MB"), r["memory_ratio_prunectl_over_tp"]] for r in results]
    print_table(f"Whole process, checkpoint in, pruned weights out, rate {RATE}, median of {repeats} interleaved runs",
                ["model", "prunectl", "Torch-Pruning", "time ratio", "prunectl peak RSS", "TP peak RSS", "mem ratio"],
                rows, note="prunectl's process also traces the model, proves soft == hard in float64 on 2-3 inputs and "
                           "writes a bundle (safetensors, pt, manifest, report); Torch-Pruning's saves a state_dict.")
    png = plots.grouped_bars([r["model"] for r in results],
                             {"prunectl": [r["prunectl"].get("wall_s", float("nan")) for r in results],
                              "Torch-Pruning 1.6": [r["torch_pruning"].get("wall_s", float("nan")) for r in results]},
                             "wall time (s)", f"Whole process: checkpoint -> pruned weights on disk (rate {RATE})")
    path = write_results("tool_speed_whole", {"rate": RATE, "repeats": repeats, "results": results}, png, quick)
    print(f"wrote {path}")


def _checkpoint(name: str, directory: Path) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    path = directory / f"{name}.pt"
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), path)
    return path


def _summary(rows: list[dict]) -> dict:
    good = [row for row in rows if row.get("status") == "ok"]
    if not good:
        return {"status": rows[0].get("status"), "runs": rows}
    return {"status": "ok", "wall_s": round(statistics.median(r["wall_s"] for r in good), 3),
            "tool_rss_mb": round(statistics.median(r["tool_rss_mb"] for r in good), 1),
            "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in good), 1),
            "params": good[0]["params"], "macs": good[0]["macs"], "runs": rows}


def _report(results: list[dict], repeats: int, quick: bool, threads: int) -> None:
    from prunectl.views import charts as plots

    rows, names, times, memory = [], [], {t: [] for t in TOOLS}, {t: [] for t in TOOLS}
    for r in results:
        p, t = r["prunectl"], r["torch_pruning"]
        both = p["status"] == "ok" and t["status"] == "ok"
        r["time_ratio_prunectl_over_tp"] = round(p["wall_s"] / t["wall_s"], 3) if both else None
        r["memory_ratio_prunectl_over_tp"] = round(p["tool_rss_mb"] / t["tool_rss_mb"], 3) if both else None
        names.append(r["model"])
        for tool, s in (("prunectl", p), ("torch_pruning", t)):
            times[tool].append(s.get("wall_s", float("nan")))
            memory[tool].append(s.get("tool_rss_mb", float("nan")))
        rows.append([r["model"], _fmt(p, "wall_s", "s"), _fmt(t, "wall_s", "s"), r["time_ratio_prunectl_over_tp"],
                     _fmt(p, "tool_rss_mb", "MB"), _fmt(t, "tool_rss_mb", "MB"), r["memory_ratio_prunectl_over_tp"],
                     _params(p), _params(t)])
    print_table(f"Tool speed, rate {RATE}, {threads} torch thread(s), median of {repeats} subprocess run(s) each",
                ["model", "prunectl", "Torch-Pruning", "time ratio", "prunectl mem", "TP mem", "mem ratio",
                 "prunectl params", "TP params"], rows,
                note="ratio = prunectl / Torch-Pruning (above 1: prunectl is slower / uses more). prunectl's time "
                     "includes its soft==hard verification and rebuild proof, which Torch-Pruning does not do. "
                     "Memory: peak RSS above the process's peak after importing the libraries.")
    png = plots.grouped_bars(names, {"prunectl": times["prunectl"], "Torch-Pruning 1.6": times["torch_pruning"]},
                             "wall time (s)", f"Checkpoint -> pruned, checked model (rate {RATE})")
    path = write_results("tool_speed", {"rate": RATE, "repeats": repeats, "torch_threads": threads,
                                        "results": results}, png, quick)
    memory_png = plots.grouped_bars(names, {"prunectl": memory["prunectl"],
                                            "Torch-Pruning 1.6": memory["torch_pruning"]},
                                    "peak RSS above libraries (MB)", "Peak memory of the pruning run")
    path.with_name(path.stem + "-memory.png").write_bytes(memory_png)
    print(f"wrote {path}")


def _fmt(summary: dict, key: str, unit: str) -> str:
    return f"{summary[key]:.2f}{unit}" if summary.get("status") == "ok" else str(summary.get("status"))[:60]


def _params(summary: dict) -> str:
    if summary.get("status") != "ok":
        return "-"
    before, after = summary["params"]
    return f"{human(before)} -> {human(after)}"


if __name__ == "__main__":
    main()
