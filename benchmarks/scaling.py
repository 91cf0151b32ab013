"""Scaling: how prunectl's (and Torch-Pruning's) time and memory grow with model size.

    .venv/bin/python benchmarks/scaling.py           # torchvision resnet18/50/101/152, vit_b_16, vit_l_16 @224
    .venv/bin/python benchmarks/scaling.py --quick   # the CIFAR ResNet18 fixture at widths x1, x2, x4 (< 2 min)

Every point is one fresh subprocess per tool (``tool_speed.py``'s measurement for torchvision
models; the same job on a widened fixture for ``--quick``, or when prunectl cannot trace
torchvision models yet): state_dict on disk -> pruned (rate 0.5), checked model with
params/MACs counted. Wall time and peak RSS above the libraries' own.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import human, peak_rss_mb, print_table, run_child, tracing_available, write_results  # noqa: E402

TOOL_SPEED = Path(__file__).resolve().parent / "tool_speed.py"
TORCHVISION = ("resnet18", "resnet50", "resnet101", "resnet152", "vit_b_16", "vit_l_16")
FIXTURE = "resnet18"
WIDTHS_QUICK = (1, 2, 4)
WIDTHS_FULL = (1, 2, 4, 8)
RATE = 0.5
TOOLS = ("prunectl", "torch_pruning")


def widened(multiplier: int) -> tuple[dict, dict]:
    """(constructor args, spec JSON) of the ResNet18 fixture with every width times ``multiplier``."""
    from fixtures.make_checkpoints import FIXTURES, build

    factory_args = FIXTURES[FIXTURE][1]
    cls = type(build(FIXTURE))
    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                if name.startswith("out_ch_")}
    args = {**factory_args, **{name: width * multiplier for name, width in defaults.items()}}
    spec = json.loads(FIXTURES[FIXTURE][2].read_text())
    spec["model"]["args"] = args
    return args, spec


def fixture_child(tool: str, multiplier: int, ckpt: str, spec_path: str, threads: int) -> dict:
    import torch

    import prunectl  # noqa: F401
    if tool == "torch_pruning":
        import torch_pruning  # noqa: F401
    torch.set_num_threads(threads)
    baseline = peak_rss_mb()
    start = time.perf_counter()
    if tool == "prunectl":
        result = prunectl.prune(ckpt, prunectl.PruneOptions(spec=spec_path, rate=RATE))
        row = {"status": "ok", "stages_s": result.timings,
               "params": [result.report["params"]["before"], result.report["params"]["after"]]}
    else:
        import torch_pruning as tp

        from fixtures.make_checkpoints import build

        args, _ = widened(multiplier)
        model = build(FIXTURE, **{k: v for k, v in args.items() if k.startswith("out_ch_")}).eval()
        model.load_state_dict(torch.load(ckpt, weights_only=True))
        x = torch.randn(1, 3, 32, 32)
        _, params_before = tp.utils.count_ops_and_params(model, x)
        classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        tp.pruner.MetaPruner(model, x, tp.importance.MagnitudeImportance(p=1), pruning_ratio=RATE,
                             ignored_layers=[classifier]).step()
        with torch.no_grad():
            model(x)
        _, params_after = tp.utils.count_ops_and_params(model, x)
        row = {"status": "ok", "params": [int(params_before), int(params_after)]}
    row["wall_s"] = round(time.perf_counter() - start, 3)
    row["tool_rss_mb"] = round(peak_rss_mb() - baseline, 1)
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="widened CIFAR fixture only (< 2 min)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tool, multiplier, ckpt, spec, threads = args.child
        print(json.dumps(fixture_child(tool, int(multiplier), ckpt, spec, int(threads))))
        return
    traced, why = tracing_available()
    if not args.quick and not traced:
        print(f"torchvision models need tracing, not available ({why}); measuring widened fixtures instead")
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick or not traced:
            points = _fixture_points(Path(tmp), WIDTHS_QUICK if args.quick else WIDTHS_FULL, args.threads)
        else:
            points = _torchvision_points(Path(tmp), args.threads)
    _report(points, args.quick, args.threads)


def _fixture_points(tmp: Path, multipliers: tuple[int, ...], threads: int) -> list[dict]:
    import torch

    from fixtures.make_checkpoints import build

    points = []
    for multiplier in multipliers:
        args, spec = widened(multiplier)
        torch.manual_seed(0)
        model = build(FIXTURE, **{k: v for k, v in args.items() if k.startswith("out_ch_")})
        ckpt, spec_path = tmp / f"w{multiplier}.pt", tmp / f"w{multiplier}.json"
        torch.save(model.state_dict(), ckpt)
        spec_path.write_text(json.dumps(spec))
        point = {"model": f"{FIXTURE} fixture x{multiplier}", "params": sum(p.numel() for p in model.parameters()),
                 "input": [1, 3, 32, 32]}
        for tool in TOOLS:
            point[tool] = run_child(Path(__file__), [tool, str(multiplier), str(ckpt), str(spec_path), str(threads)],
                                    timeout=900)
            print(f"  {point['model']} {tool}: {point[tool].get('status')} {point[tool].get('wall_s', '')}s",
                  flush=True)
        points.append(point)
    return points


def _torchvision_points(tmp: Path, threads: int) -> list[dict]:
    import torch
    import torchvision

    points = []
    for name in TORCHVISION:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None)
        ckpt = tmp / f"{name}.pt"
        torch.save(model.state_dict(), ckpt)
        point = {"model": name, "params": sum(p.numel() for p in model.parameters()), "input": [1, 3, 224, 224]}
        del model
        for tool in TOOLS:
            point[tool] = run_child(TOOL_SPEED, [tool, name, str(ckpt), "224", str(RATE), str(threads)], timeout=1800)
            print(f"  {name} {tool}: {point[tool].get('status')} {point[tool].get('wall_s', '')}s "
                  f"{point[tool].get('tool_rss_mb', '')}MB", flush=True)
        ckpt.unlink()
        points.append(point)
    return points


def _report(points: list[dict], quick: bool, threads: int) -> None:
    from prunectl.views import charts as plots

    def value(point: dict, tool: str, key: str) -> float:
        return point[tool][key] if point[tool].get("status") == "ok" else float("nan")

    rows = [[p["model"], human(p["params"]), *(f"{value(p, t, 'wall_s'):.2f}s" for t in TOOLS),
             *(f"{value(p, t, 'tool_rss_mb'):.0f}MB" for t in TOOLS),
             f"{value(p, 'prunectl', 'wall_s') / value(p, 'torch_pruning', 'wall_s'):.2f}"] for p in points]
    print_table(f"Scaling: prune at rate {RATE}, one subprocess per point, {threads} thread(s)",
                ["model", "params", "prunectl time", "TP time", "prunectl mem", "TP mem", "time ratio"], rows,
                note="mem: peak RSS above the process's peak after importing the libraries; "
                     "time ratio = prunectl / Torch-Pruning.")
    xs = [p["params"] / 1e6 for p in points]
    labels = [p["model"] for p in points]
    png = plots.line_chart(xs, {"prunectl": [value(p, "prunectl", "wall_s") for p in points],
                                "Torch-Pruning 1.6": [value(p, "torch_pruning", "wall_s") for p in points]},
                           "parameters (millions)", "wall time (s)", f"Pruning cost vs model size (rate {RATE})",
                           labels=labels)
    path = write_results("scaling", {"rate": RATE, "torch_threads": threads, "points": points}, png, quick)
    memory_png = plots.line_chart(xs, {"prunectl": [value(p, "prunectl", "tool_rss_mb") for p in points],
                                       "Torch-Pruning 1.6": [value(p, "torch_pruning", "tool_rss_mb") for p in points]},
                                  "parameters (millions)", "peak RSS above libraries (MB)",
                                  "Pruning memory vs model size", labels=labels)
    path.with_name(path.stem + "-memory.png").write_bytes(memory_png)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
