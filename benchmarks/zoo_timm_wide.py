"""Broad timm sweep: one small model of every timm architecture, pruned strictly, side by side with
Torch-Pruning 1.6 on the same list.

    .venv/bin/python benchmarks/zoo_timm_wide.py [NAME ...]   # -> docs/results/zoo_timm_wide.md / .json
    .venv/bin/python benchmarks/zoo_timm_wide.py --not-strict # again the rows that were not strict
    make zoo ZOO_MODELS=--timm-wide

Which models (``select_models``, written down so the list can be regenerated): every name of
``timm.list_models()`` is grouped by its architecture, the timm module that defines it plus the
leading letters of its name (``resnet.py``'s ``resnet``, ``seresnet``, ``resnext``, ...), each built
on the meta device to count its parameters at its default config; the smallest of each group with
at most ``MAX_PARAMS`` stands for it, and each module gives its two smallest architectures. The
list is cached in the JSON (same timm version) so a rerun does not rebuild 1,300 models.

Each model runs in its own subprocess, both tools one after the other, with a time limit
(``TIMEOUT_S`` for the two; a timeout costs one row):
random init, zero weights given small values, BatchNorm statistics from one batch (zoo.py's
helpers), input 1x3x64x64 where the model runs at 64, else its default size. prunectl: ``prune``
strict (no ``skip_unsupported``) at rate 0.3, soft == hard proven, ONNX checked by onnxruntime
(atol 1e-4, prunectl's own check), the bundle reloaded (``prunectl.load``) and its output compared
with the pruned model's; when the strict run is refused (exit 6, the op named), again with
``skip_unsupported``. Torch-Pruning, after it in the same subprocess, on the same input: ``MetaPruner`` with
``MagnitudeImportance(p=1)`` at the same rate, the classifier ignored, ``num_heads`` for timm's
attention modules, ``step()``, a forward pass (finite, the classifier's width), ``torch.onnx.export``
and onnxruntime against torch within 1e-4. Torch-Pruning has no soft-vs-hard proof.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zoo import _calibrate_batch_norms, _escape, _first_input_that_runs, _m, _randomise_zero_weights

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "docs" / "results" / "zoo_timm_wide.json"
RATE = 0.3
MAX_PARAMS = 30_000_000
TIMEOUT_S = 180  # both tools on one model, on 2 busy cores
ONNX_ATOL = 1e-4
SMALL_SHAPE = (1, 3, 64, 64)
WORKERS = 2  # models at a time, each with one torch thread: the 2 cores stay busy between a model's phases


def select_models() -> list[str]:
    """Per timm module (a family: ``resnet.py``, ``byobnet.py``, ...), the smallest model of each of
    its two smallest architectures (<= MAX_PARAMS at the default config; timm's own ``test_*``
    models left out: they are not architectures anyone prunes)."""
    import timm
    import torch
    from timm.models._registry import _model_to_module

    smallest: dict[tuple[str, str], tuple[int, str]] = {}
    for name in timm.list_models():
        if name.startswith("test_"):
            continue
        group = (_model_to_module[name], re.match(r"[a-z]+", name).group(0))
        try:
            with torch.device("meta"):
                params = sum(p.numel() for p in timm.create_model(name).parameters())
        except Exception:
            continue  # cannot be built without downloads or real tensors: not a candidate
        if params <= MAX_PARAMS and (group not in smallest or params < smallest[group][0]):
            smallest[group] = (params, name)
    per_module: dict[str, list[tuple[int, str]]] = {}
    for (module, _), entry in smallest.items():
        per_module.setdefault(module, []).append(entry)
    return sorted(name for entries in per_module.values() for _, name in sorted(entries)[:2])


def small_build(name: str):
    """(model, factory args, input shape): the model at 64x64 where it runs there as built (most
    CNNs), else built for 64x64 (``img_size=64``: ViTs and other models with a fixed token grid),
    else at its default input size. Random init, zero weights given small values, BatchNorm
    statistics from one batch."""
    for args in ({}, {"img_size": SMALL_SHAPE[-1]}):
        model = _built(name, args, optional=bool(args))
        if model is not None and _first_input_that_runs(model, (SMALL_SHAPE, None)) == SMALL_SHAPE:
            shape = SMALL_SHAPE
            break
    else:
        args = {}
        model = _built(name, args)
        shape = (1, *model.pretrained_cfg.get("input_size", (3, 224, 224)))
    _randomise_zero_weights(model)
    _calibrate_batch_norms(model, shape)
    return model, args, shape


def _built(name: str, args: dict, optional: bool = False):
    import torch

    from prunectl.models.factory import build

    torch.manual_seed(0)
    try:
        return build(f"timm:{name}", args).eval()
    except Exception:
        if not optional:
            raise
        return None  # the model takes no such argument


def run_prunectl(name: str) -> dict:
    import torch

    import prunectl
    from prunectl.errors import PrunectlError

    row: dict = {"model": name, "rate": RATE}
    model, args, shape = small_build(name)
    row["input"], row["factory_args"] = list(shape), args
    state = {key: value.clone() for key, value in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        for skip in (False, True):
            model.load_state_dict(state)  # the strict try may have masked it in place
            start = time.perf_counter()
            out = Path(tmp) / f"out-{skip}"
            try:
                result = prunectl.prune(model, model=f"timm:{name}", factory_args=args, rate=RATE,
                                        example_inputs=torch.randn(shape), output=out, onnx=True,
                                        skip_unsupported=skip)
            except PrunectlError as exc:
                key = "strict_error" if not skip else "error"
                row[key] = f"{type(exc).__name__} (exit {exc.exit_code}): {exc}"[:600]
                row["status"] = "fail"
                continue
            row.update(_facts(result, out), seconds=round(time.perf_counter() - start, 2),
                       status="strict" if not skip else "skip-unsupported")
            break
    return row


def _facts(result, out: Path) -> dict:
    """What the row records of a finished prune: sizes, the proofs, the reload."""
    import prunectl

    report, manifest = result.report, result.manifest.to_json()
    reloaded = prunectl.load(out)
    with __import__("torch").no_grad():
        expected, got = result.model(*result.inputs[:1]), reloaded(*result.inputs[:1])
    pinned = report.get("traced", {}).get("pinned", {})
    return {
        "params_before": report["params"]["before"], "params_after": report["params"]["after"],
        "macs_before": report["macs"]["before"], "macs_after": report["macs"]["after"],
        "soft_vs_hard": manifest["verify"]["soft_vs_hard_max_abs"],
        "output_max_abs": manifest["verify"].get("reference_max_abs"),
        "onnx_max_abs": manifest.get("onnx", {}).get("max_abs"),
        "reload_max_abs": float((expected - got).abs().max()),
        "layers": len(report["layers"]), "pinned_layers": len(pinned),
        "tracer": report.get("traced", {}).get("tracer", "torch.fx"),
    }


def run_torch_pruning(name: str, args: dict, shape: tuple[int, ...]) -> dict:
    import onnxruntime
    import torch
    import torch_pruning as tp

    model = _built(name, args)
    _randomise_zero_weights(model)
    _calibrate_batch_norms(model, shape)
    example = torch.randn(shape)
    params_before = sum(p.numel() for p in model.parameters())
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    ignored = [classifier] if isinstance(classifier, torch.nn.Module) else []
    heads = {m.qkv: m.num_heads for m in model.modules()
             if isinstance(getattr(m, "qkv", None), torch.nn.Linear) and isinstance(getattr(m, "num_heads", None), int)}
    try:
        pruner = tp.pruner.MetaPruner(model, example, tp.importance.MagnitudeImportance(p=1), pruning_ratio=RATE,
                                      ignored_layers=ignored, num_heads=heads)
        pruner.step()
        with torch.no_grad():
            out = model(example)
    except Exception as exc:
        return {"status": "fail", "error": f"{type(exc).__name__}: {exc}"[:400]}
    params_after = sum(p.numel() for p in model.parameters())
    if not bool(torch.isfinite(out).all()):
        return {"status": "fail", "error": "pruned model output is not finite"}
    row = {"params_before": params_before, "params_after": params_after}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False)
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
        except Exception as exc:
            return {**row, "status": "fail", "error": f"ONNX: {type(exc).__name__}: {exc}"[:400]}
    row["onnx_max_abs"] = float(abs(torch.from_numpy(got) - out).max())
    if row["onnx_max_abs"] > ONNX_ATOL * max(1.0, float(out.abs().max())):
        return {**row, "status": "fail", "error": f"ONNX output differs from torch by {row['onnx_max_abs']:.1e}"}
    return {**row, "status": "ok" if params_after < params_before else "no-reduction"}


def _child(name: str) -> None:
    """Both tools on one model, one JSON line each (prunectl's first: a Torch-Pruning crash or
    timeout after it still leaves prunectl's row); one interpreter saves a second import of torch."""
    import torch

    torch.set_num_threads(1)
    try:
        row = run_prunectl(name)
    except Exception as exc:  # a model that cannot even be built or run: one row, not the sweep
        row = {"model": name, "status": "fail", "error": f"{type(exc).__name__}: {exc}"[:400]}
    print(json.dumps(row), flush=True)
    if "input" not in row:
        peer = {"status": "not run", "error": "the model did not build or run"}
    else:
        try:
            peer = run_torch_pruning(name, row["factory_args"], tuple(row["input"]))
        except Exception as exc:
            peer = {"status": "fail", "error": f"{type(exc).__name__}: {exc}"[:400]}
    print(json.dumps({"torch_pruning": peer}), flush=True)


def _in_subprocess(name: str) -> dict:
    start = time.perf_counter()
    lines, why, error = _lines_of(["--one", name])
    row = next((line for line in lines if "model" in line), {"model": name, "status": why, "error": error})
    row["torch_pruning"] = next((line["torch_pruning"] for line in lines if "torch_pruning" in line),
                                {"status": why, "error": error})
    if why == "timeout" and "input" in row and row["torch_pruning"]["status"] == "timeout":
        # prunectl used most of the time: Torch-Pruning gets its own subprocess and limit
        peer, why, error = _lines_of(["--tp", name, json.dumps(row["factory_args"]), json.dumps(row["input"])])
        row["torch_pruning"] = peer[-1]["torch_pruning"] if peer else {"status": why, "error": error}
    row["wall_s"] = round(time.perf_counter() - start, 1)
    return row


def _lines_of(args: list[str]) -> tuple[list[dict], str, str]:
    """The JSON lines a child printed (also when it was killed at TIMEOUT_S), how it ended, why."""
    try:
        proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                              timeout=TIMEOUT_S, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        stdout, stderr, why = proc.stdout, proc.stderr, "crash"
    except subprocess.TimeoutExpired as exc:
        stdout, stderr, why = _text(exc.stdout), _text(exc.stderr), "timeout"
    error = f"over {TIMEOUT_S}s" if why == "timeout" else (stderr.strip().splitlines() or ["no output"])[-1][:400]
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")], why, error


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def sweep(names: list[str], selected: list[str], workers: int = WORKERS) -> list[dict]:
    """Run ``names`` (``workers`` subprocesses at a time, one torch thread each), merging the rows
    into the JSON after every model so a sweep cut short still leaves its table."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    rows = {row["model"]: row for row in _read()["models"]} if OUT_JSON.exists() else {}
    lock = threading.Lock()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()

    def one(name: str) -> None:
        row = {**_in_subprocess(name), "commit": commit}
        with lock:
            rows[name] = row
            print(f"{name:36s} {row['status']:17s} TP {row['torch_pruning']['status']:12s} "
                  f"{(row.get('strict_error') or row.get('error') or '')[:110]}", flush=True)
            write(list(rows.values()), selected)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, names))
    return list(rows.values())


def _read() -> dict:
    return json.loads(OUT_JSON.read_text())


def write(rows: list[dict], selected: list[str]) -> None:
    import platform

    import timm
    import torch
    import torch_pruning

    order = {name: i for i, name in enumerate(selected)}
    rows = sorted(rows, key=lambda r: order.get(r["model"], 1 << 30))
    meta = {"rate": RATE, "torch": torch.__version__, "timm": timm.__version__,
            "torch_pruning": torch_pruning.__version__, "max_params": MAX_PARAMS, "timeout_s": TIMEOUT_S,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "date": time.strftime("%Y-%m-%d"),
            "selected": selected}
    OUT_JSON.write_text(json.dumps({"meta": meta, "models": rows}, indent=1) + "\n")
    OUT_JSON.with_suffix(".md").write_text(markdown(rows, meta))


def markdown(rows: list[dict], meta: dict) -> str:
    strict = sum(r["status"] == "strict" for r in rows)
    skip = sum(r["status"] == "skip-unsupported" for r in rows)
    peer = sum(r["torch_pruning"]["status"] == "ok" for r in rows)
    n = len(rows)
    lines = [
        "# Model zoo: one small model of every timm architecture, prunectl and Torch-Pruning",
        "",
        f"Generated by `make zoo ZOO_MODELS=--timm-wide` (`benchmarks/zoo_timm_wide.py`); torch {meta['torch']}, "
        f"timm {meta['timm']}, Torch-Pruning {meta['torch_pruning']}, {meta['date']}. The list: per timm module, "
        f"the smallest model (<= {meta['max_params'] / 1e6:.0f}M params) of each of its two smallest architectures "
        "(an architecture: the module and the name's leading letters; `select_models` in the script). "
        f"Random init, rate {meta['rate']}, each model in its own subprocess with {meta['timeout_s']} s "
        "for both tools.",
        "",
        f"- **prunectl strict (traced, nothing pinned by an op): {strict} / {n} ({100 * strict / max(n, 1):.0f} %)**;"
        f" with `--skip-unsupported`: {skip} more ({strict + skip} / {n} pruned); failed: {n - strict - skip}.",
        f"- **Torch-Pruning 1.6: {peer} / {n} ({100 * peer / max(n, 1):.0f} %)** pruned, forward run, ONNX exported "
        f"and within {ONNX_ATOL:g} of torch.",
        "",
        "Rows by the commit that ran them: " + ", ".join(
            f"{commit} ({count})" for commit, count in sorted(_count(r.get("commit", "?") for r in rows).items()))
        + " (`--not-strict` reruns the rows that were not strict after a tracer change).",
        "",
        "prunectl's pass: soft == hard proven (float64, relative 1e-9), ONNX vs onnxruntime by prunectl's own "
        "check (atol 1e-4 relative, or torch's own float32 error where that is larger: verification/onnx_check.py), "
        "the bundle reloaded with `prunectl.load` ('reload': its output against the returned model's, float32; "
        "the branch predates main's aligned-weight copy, so a few rows differ by float32 rounding). Torch-Pruning's: "
        "`MetaPruner` + `MagnitudeImportance(p=1)`, classifier ignored, `num_heads` of timm attention; a "
        "forward pass (finite), `torch.onnx.export`, onnxruntime within 1e-4 relative (it has no soft-vs-hard "
        "proof). Input: 64x64 where the model runs there, else its default size. Errors are max |diff|.",
        "",
        "| model | input | prunectl | params before -> after | soft-vs-hard | ONNX | reload | pinned | "
        "Torch-Pruning | TP params after | note (the op that stops strict tracing, or the failure) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tp = r["torch_pruning"]
        note = r.get("strict_error", "") if r["status"] != "fail" else r.get("error", r.get("strict_error", ""))
        tp_note = "" if tp["status"] in ("ok", "not run") else f" TP: {tp.get('error', '')}"
        done = r["status"] in ("strict", "skip-unsupported")
        lines.append(
            f"| {r['model']} | {r.get('input', ['?'])[-1]} | {r['status']} | "
            + (f"{_m(r['params_before'])} -> {_m(r['params_after'])} | {r['soft_vs_hard']:.1e} | "
               f"{_e(r.get('onnx_max_abs'))} | {_e(r.get('reload_max_abs'))} | {r['pinned_layers']}/{r['layers']} | "
               if done else "| | | | | ")
            + f"{tp['status']} | {_m(tp['params_after']) if 'params_after' in tp else ''} | "
            f"{_escape(note[:220] + tp_note[:160])} |")
    stopped = _count(_blocker(r["strict_error"]) for r in rows if r.get("strict_error"))
    lines += ["", "What stops the strict trace (the first op each exit 6 names; a model usually has several):", "",
              "| blocker | models |", "|---|---|"]
    lines += [f"| {label} | {count} |" for label, count in sorted(stopped.items(), key=lambda item: -item[1])]
    missing = [name for name in meta["selected"] if name not in {r["model"] for r in rows}]
    if missing:
        lines += ["", f"Not run yet ({len(missing)}): " + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


# what stops a strict trace, by the words of its exit-6 message (the first op named), for the tally
BLOCKERS = (
    ("a split or chunk of the channel dim (a split producer)", ("splits the channel dim", "indexes the channel dim")),
    ("a reshape splitting the channels (heads/windows not followed)", ("splitting the channel dim",)),
    ("a reshape to a channel or head count fixed in the code", ("fixed in the model's code",)),
    ("a channel count used in arithmetic (C // num_heads)", ("uses the number of pruned channels",)),
    ("a fixed tensor combined with the channels (pos/rel-pos bias, tables)", ("fixed tensor",)),
    ("an op on a concatenation", ("concatenation",)),
    ("channels read along another dim (token mixing, ECA's Conv1d)", ("reads channels from dim",)),
    ("an op the tracer does not know", ("does not know",)),
)


def _blocker(message: str) -> str:
    return next((label for label, words in BLOCKERS if any(word in message for word in words)), "other")


def _count(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def selection() -> list[str]:
    """The cached list when the JSON was written with this timm, else ``select_models()``."""
    import timm

    if OUT_JSON.exists():
        meta = _read()["meta"]
        if meta.get("timm") == timm.__version__ and meta.get("max_params") == MAX_PARAMS and meta.get("selected"):
            return meta["selected"]
    return select_models()


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        _child(argv[1])
        return
    if argv[:1] == ["--tp"]:  # Torch-Pruning alone, after a shared subprocess ran out of time in it
        import torch

        torch.set_num_threads(1)
        try:
            peer = run_torch_pruning(argv[1], json.loads(argv[2]), tuple(json.loads(argv[3])))
        except Exception as exc:
            peer = {"status": "fail", "error": f"{type(exc).__name__}: {exc}"[:400]}
        print(json.dumps({"torch_pruning": peer}), flush=True)
        return
    selected = selection()
    print(f"{len(selected)} models selected", flush=True)
    if argv == ["--not-strict"]:  # after a tracer change: again every row that was not strict
        argv = [row["model"] for row in _read()["models"] if row["status"] != "strict"]
    sweep(argv or selected, selected)


if __name__ == "__main__":
    main(sys.argv[1:])
