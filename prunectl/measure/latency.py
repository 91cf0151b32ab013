"""Latency of the original against the pruned model, on the runtimes users deploy with.

Timing is noisy on a shared machine, so both models are measured together: warm-up, then
their runs interleaved in a fresh random order each round (a burst of load from another
process hits both, and a fixed order cannot phase-lock with the scheduler), median reported
with p10/p90. ONNX Runtime runs on the CPU execution provider with a fixed thread count,
sequential execution and all graph optimisations, as a deployment would.

``prune --latency`` stores the result in report.json; ``benchmarks/latency.py`` uses the same
functions for its tables.
"""
from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ..exporters.onnx import export_onnx


def ort_session(path: Path, threads: int, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        so.enable_profiling, so.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def interleaved(functions: list[Callable[[], Any]], budget: float, warmup: int = 5,
                progress: Callable[[float], None] | None = None) -> list[dict[str, float]]:
    """Median, p10 and p90 milliseconds of each function over about ``budget`` seconds."""
    for function in functions:
        for _ in range(warmup):
            function()
    start = time.perf_counter()
    for function in functions:
        function()
    per_round = max(time.perf_counter() - start, 1e-6)
    rounds = int(min(max(budget / per_round, 15), 3000))
    samples: list[list[float]] = [[] for _ in functions]
    shuffler = random.Random(0)
    order = list(range(len(functions)))
    for done in range(rounds):
        shuffler.shuffle(order)
        for i in order:
            t0 = time.perf_counter_ns()
            functions[i]()
            samples[i].append((time.perf_counter_ns() - t0) / 1e6)
        if progress is not None:
            progress((done + 1) / rounds)
    return [_stats(s) for s in samples]


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"median_ms": round(statistics.median(ordered), 4), "p10_ms": round(percentile(0.1), 4),
            "p90_ms": round(percentile(0.9), 4), "runs": len(ordered)}


def time_models(models: list[nn.Module], onnx_files: list[Path] | None, example: torch.Tensor, budget: float,
                threads: int = 1, progress: Callable[[str, float], None] | None = None) -> dict[str, list[dict]]:
    """Statistics per model on torch eager (under inference_mode) and, given their ONNX files, on
    ONNX Runtime; the models of one runtime interleaved with each other."""
    result: dict[str, list[dict]] = {}
    with torch.inference_mode():
        result["torch"] = interleaved([lambda m=m: m(example) for m in models], budget,
                                      progress=_stage(progress, "torch"))
    if onnx_files is not None:
        feed = {"input": example.numpy()}
        sessions = [ort_session(path, threads) for path in onnx_files]
        result["onnxruntime"] = interleaved([lambda s=s: s.run(None, feed) for s in sessions], budget,
                                            progress=_stage(progress, "onnxruntime"))
    return result


def compare_latency(original: nn.Module, pruned: nn.Module, example: torch.Tensor, *, threads: int = 1,
                    budget: float = 2.0, onnx: bool = True,
                    progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """report.json's ``latency``: torch eager and (``onnx``) ONNX Runtime, before and after.

    Both models are exported to a temporary directory with the bundle's own exporter, so the
    ONNX numbers describe the file ``--onnx`` writes."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    models = [original.eval(), pruned.eval()]
    try:
        with tempfile.TemporaryDirectory(prefix="prunectl-latency-") as tmp:
            paths = None
            if onnx:
                paths = [Path(tmp) / "original.onnx", Path(tmp) / "pruned.onnx"]
                for model, path in zip(models, paths):
                    export_onnx(model, example, path)
            timed = time_models(models, paths, example, budget, threads, progress)
    finally:
        torch.set_num_threads(previous_threads)
    result: dict[str, Any] = {"threads": threads, "input": list(example.shape),
                              **{runtime: _pair(stats) for runtime, stats in timed.items()}}
    runtime = "onnxruntime" if onnx else "torch"
    # the headline the report shows: the runtime people deploy to
    result.update(runtime=runtime, before=result[runtime]["before"]["median_ms"],
                  after=result[runtime]["after"]["median_ms"])
    return result


def _pair(stats: list[dict[str, float]]) -> dict[str, Any]:
    before, after = stats
    return {"before": before, "after": after, "speedup": round(before["median_ms"] / after["median_ms"], 3)}


def _stage(progress: Callable[[str, float], None] | None, name: str) -> Callable[[float], None] | None:
    return None if progress is None else (lambda fraction: progress(name, fraction))
