"""What every benchmark shares: machine facts, result files, the rich table, child processes.

Benchmarks run on demand (``make bench``), never in the test suite. Each writes
``docs/results/bench/<name>.json`` (results + the machine they ran on) and ``docs/results/bench/<name>.png``.
Heavy measurements run in a fresh subprocess each (``run_child``), so that one tool's
allocations, caches and imports cannot flatter or penalise the next, and peak memory
(VmHWM) belongs to that measurement alone.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "results" / "bench"
if str(ROOT) not in sys.path:  # fixtures.* and prunectl resolve from the repository root
    sys.path.insert(0, str(ROOT))


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, library versions and the load at the time (a busy machine skews timings)."""
    import numpy
    import onnxruntime
    import torch
    import torchvision

    info: dict[str, Any] = {
        "cpu": _cpu_model(), "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
        "torch_default_threads": torch.get_num_threads(),  # the runs set their own (see the result keys)
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    try:
        info["torch_pruning"] = importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:
        info["torch_pruning"] = None
    import prunectl

    info["prunectl"] = prunectl.__version__
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes (what ``write_results`` writes beside the JSON)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def write_results(name: str, payload: dict[str, Any], png: bytes | None, quick: bool) -> Path:
    """docs/results/bench/<name>.json (+ .png); quick runs get a ``-quick`` suffix so they never
    overwrite the full results that the README quotes."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-quick" if quick else name
    path = OUT_DIR / f"{stem}.json"
    payload = {"benchmark": name, "quick": quick, "machine": machine_info(), **payload}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    if png is not None:
        (OUT_DIR / f"{stem}.png").write_bytes(png)
    return path


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], note: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*[_cell(value) for value in row])
    console = Console()
    if not console.is_terminal:  # piped to a file: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)
    if note:
        console.print(note, style="dim")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB.

    VmHWM (the high-water mark of this process's own address space), not ``ru_maxrss``: Linux
    carries ``ru_maxrss`` over fork and exec, so a child would report its parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort


def run_child(script: Path, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``script --child ARGS`` in a fresh interpreter; it prints one JSON line last."""
    command = [sys.executable, str(script), "--child", *args]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout:.0f}s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"status": f"failed (exit {done.returncode}): {tail[:300]}",
                "process_s": round(time.perf_counter() - start, 2)}
    return json.loads(lines[-1])


def human(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}"


def tracing_available() -> tuple[bool, str]:
    """Whether prunectl can prune a torchvision model without a hand-written spec (issue 4)."""
    import prunectl

    if not hasattr(prunectl, "derive_spec"):
        return False, "prunectl.derive_spec is missing: automatic specs (tracing) are not in this version"
    return True, "ok"
