"""Coverage sweep: every torchvision classification model, traced and pruned at rate 0.3.

    .venv/bin/python benchmarks/zoo.py                 # all models -> docs/results/zoo.md, docs/results/zoo.json
    .venv/bin/python benchmarks/zoo.py resnet18 vit_b_16   # a few (results merged into the JSON)
    .venv/bin/python benchmarks/zoo.py --timm [NAME ...]  # representative timm list -> docs/results/zoo_timm.md
    .venv/bin/python benchmarks/zoo.py --hf [CLASS ...]   # transformers encoders -> docs/results/zoo_hf.md/json
    .venv/bin/python benchmarks/zoo.py --llm [FAMILY ...] # decoder LLMs -> docs/results/zoo_llm.md/json
    .venv/bin/python benchmarks/zoo.py --timm-wide [NAME ...]  # every timm architecture's smallest model,
                                                          # with Torch-Pruning -> docs/results/zoo_timm_wide.md/json
    .venv/bin/python benchmarks/zoo.py --tasks [NAME ...] # torchvision segmentation/video/detection
                                                          # -> docs/results/zoo_tasks.md/json

Each model runs in its own subprocess (a crash or a memory blow-up costs one row, not the
sweep): random init (no downloads), state_dict saved, ``prunectl.prune`` with no spec (so
the spec is traced), ``skip_unsupported=True``, ONNX export and check. A second, strict
trace (``skip_unsupported=False``) records whether the model needs the skip at all.
Input: 1x3x64x64, or 1x3x224x224 for models that do not run at 64 (ViT, Swin, MaxViT, ...).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = 0.3
TIMEOUT_S = 900
# run last: the biggest models (memory and time), so the rest of the table fills first
HEAVY = ("vit_h_14", "regnet_y_128gf", "vit_l_16", "vit_l_32", "regnet_y_32gf", "efficientnet_v2_l",
         "regnet_y_16gf", "regnet_x_32gf", "convnext_large", "swin_v2_b", "swin_b", "maxvit_t")
# issue 4's representative timm list: ViT, DeiT, Swin, ConvNeXt, EfficientNet, RegNet, MobileViT
# (torch.fx cannot trace it: the torch.export fallback), ResNeSt, CoAtNet, and two CNN baselines
TIMM_MODELS = ("resnet18", "mobilenetv3_small_100", "efficientnet_b0", "regnetx_002", "convnext_atto",
               "resnest14d", "mobilevit_xxs", "vit_tiny_patch16_224", "deit_tiny_patch16_224",
               "swin_tiny_patch4_window7_224", "coatnet_nano_rw_224")
# transformers encoders at their library-default (base-size) configs; text models on 1x16 token ids
HF_MODELS = ("BertModel", "RobertaModel", "DistilBertModel", "ElectraModel", "ViTModel")
# `--tasks`: torchvision's segmentation, video and detection models (issue 4: "as far as they
# trace"); the smallest input each architecture accepts is tried first
TASK_FAMILIES = ("segmentation", "video", "detection")
IMAGE_SHAPES = ((1, 3, 64, 64), (1, 3, 224, 224), (1, 3, 320, 320))  # SSD300 needs 300+
VIDEO_SHAPES = ((1, 3, 4, 32, 32), (1, 3, 16, 112, 112), (1, 3, 16, 224, 224))


def run_one(name: str, provider: str = "torchvision") -> dict:
    import torch

    import prunectl
    from prunectl.errors import PrunectlError
    from prunectl.models.factory import build
    from prunectl.models.inputs import default_input_dtype, default_input_shape
    from prunectl.tracing import trace_model

    row: dict = {"model": name, "rate": RATE}
    torch.manual_seed(0)
    factory = "torchvision" if provider == "tasks" else provider
    model = build(f"{factory}:{name}", {}).eval()
    _randomise_zero_weights(model)
    # a detector cannot be traced whole (data-dependent post-processing): its backbone is pruned
    module = "backbone" if provider == "tasks" and name in _task_models("detection") else None
    traced = model if module is None else model.get_submodule(module)
    if provider == "hf":  # the model's own input: token ids, or its config's image size
        shape = default_input_shape(None, model)
    else:
        shape = _first_input_that_runs(traced, VIDEO_SHAPES if name in _task_models("video") else IMAGE_SHAPES)
        _calibrate_batch_norms(traced, shape)
    row["input"] = list(shape)
    if module is not None:
        row["module"] = module
    start = time.perf_counter()
    try:
        trace_model(traced, shape, dtype=default_input_dtype(model))
        row["strict_trace"] = "ok"
    except PrunectlError as exc:
        row["strict_trace"] = str(exc)
    row["trace_s"] = round(time.perf_counter() - start, 2)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / f"{name}.pt"
        torch.save(model.state_dict(), ckpt)
        del model
        start = time.perf_counter()
        try:
            result = prunectl.prune(ckpt, prunectl.PruneOptions(
                model=f"{factory}:{name}", module=module, rate=RATE, input_shape=shape, output=Path(tmp) / "out",
                onnx=module is None, skip_unsupported=True))
        except PrunectlError as exc:
            row.update(status="fail", error=f"{type(exc).__name__}: {exc}"[:600],
                       seconds=round(time.perf_counter() - start, 2))
            return row
        row["seconds"] = round(time.perf_counter() - start, 2)
        report, manifest = result.report, result.manifest.to_json()
        pinned = report.get("traced", {}).get("pinned", {})
        row.update(
            status="ok" if report["params"]["after"] < report["params"]["before"] else "no-reduction",
            params_before=report["params"]["before"], params_after=report["params"]["after"],
            macs_before=report["macs"]["before"], macs_after=report["macs"]["after"],
            soft_vs_hard=manifest["verify"]["soft_vs_hard_max_abs"],
            output_max_abs=manifest["verify"].get("reference_max_abs"),
            onnx_max_abs=manifest.get("onnx", {}).get("max_abs"),
            layers=len(report["layers"]), groups=len(report["groups"]),
            pruned_groups=sum(1 for g in report["groups"] if g["kept"] < g["size"]),
            pinned_layers=len(pinned), tracer=report.get("traced", {}).get("tracer", "torch.fx"),
            pinned_by_ops=sorted({reason for reason in pinned.values()
                                  if "reach the model output" not in reason})[:5],
            timings=result.timings,
        )
    return row


def _randomise_zero_weights(model) -> None:
    """torchvision zero-initialises some classifiers (ViT's head): the model would output zeros
    for every input and soft == hard would hold trivially. Give such weights small random values."""
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1 and not parameter.any():
                parameter.normal_(std=0.02)


def _calibrate_batch_norms(model, shape: tuple[int, ...]) -> None:
    """Random init leaves BatchNorm statistics at mean 0, variance 1, far from what random weights
    produce: deep models then output ~1e-20 (efficientnet) or ~1e3 (inception), and soft == hard
    compares numbers too small or too large to mean anything. One eval-mode pass over a random
    batch sets each BatchNorm's statistics, just before it normalises, to those of its input (what
    a training-mode pass would, without training-only branches such as inception's aux head). The
    batch has the scale of the largest verification input (5x, verify.make_inputs): calibrated on
    unit inputs, efficientnet runs 5x inputs into activations of 1e4 where float32 rounding alone
    grows past the 1e-5 check."""
    import torch

    def calibrate(norm, args) -> None:
        x = args[0].double()
        dims = [d for d in range(x.dim()) if d != 1]
        norm.running_mean.copy_(x.mean(dims))
        norm.running_var.copy_(x.var(dims, unbiased=False))

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    handles = [norm.register_forward_pre_hook(calibrate) for norm in norms]
    try:
        with torch.no_grad():
            model(torch.randn(max(2, shape[0]), *shape[1:], generator=torch.Generator().manual_seed(1)) * 5)
    finally:
        for handle in handles:
            handle.remove()


def _first_input_that_runs(model, shapes: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    import torch

    for shape in shapes[:-1]:
        try:
            with torch.no_grad():
                model(torch.randn(shape))
            return shape
        except Exception:
            continue
    return shapes[-1]


def _task_models(family: str | None = None) -> list[str]:
    import torchvision

    families = TASK_FAMILIES if family is None else (family,)
    return [name for f in families for name in torchvision.models.list_models(module=getattr(torchvision.models, f))]


def sweep(names: list[str], out_json: Path, provider: str = "torchvision") -> list[dict]:
    rows = {row["model"]: row for row in json.loads(out_json.read_text())["models"]} if out_json.exists() else {}
    for name in names:
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", name, provider], capture_output=True, text=True,
                                  timeout=TIMEOUT_S, cwd=ROOT)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            row = json.loads(lines[-1]) if lines else {
                "model": name, "status": "crash",
                "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:600]}
        except subprocess.TimeoutExpired:
            row = {"model": name, "status": "timeout", "error": f"over {TIMEOUT_S}s"}
        row["wall_s"] = round(time.perf_counter() - start, 1)
        rows[name] = row
        print(f"{name:28s} {row['status']:12s} {row.get('seconds', '')}s {row.get('error', '')[:150]}", flush=True)
        write(list(rows.values()), out_json, provider)
    return list(rows.values())


def write(rows: list[dict], out_json: Path, provider: str = "torchvision") -> None:
    import platform

    import torch
    import torchvision

    order = {name: i for i, name in enumerate(all_models(provider))}
    rows = sorted(rows, key=lambda r: order.get(r["model"], 1 << 30))
    meta = {"rate": RATE, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "date": time.strftime("%Y-%m-%d")}
    if provider in ("timm", "hf"):
        library = __import__({"timm": "timm", "hf": "transformers"}[provider])
        meta[provider] = library.__version__
    out_json.write_text(json.dumps({"meta": meta, "models": rows}, indent=1) + "\n")
    out_json.with_suffix(".md").write_text(markdown(rows, meta, provider))


def markdown(rows: list[dict], meta: dict, provider: str = "torchvision") -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    strict = [r for r in ok if r.get("strict_trace") == "ok"]
    library = {"timm": "timm", "hf": "transformers"}.get(provider)
    made = (f"`make zoo ZOO_MODELS=--{provider}` (`benchmarks/zoo.py --{provider}`); torch {meta['torch']}, "
            f"{library} {meta.get(provider)}" if library else
            f"`make zoo{' ZOO_MODELS=--tasks' if provider == 'tasks' else ''}` "
            f"(`benchmarks/zoo.py{' --tasks' if provider == 'tasks' else ''}`); "
            f"torch {meta['torch']}, torchvision {meta['torchvision']}")
    title = {"timm": "a representative timm list", "hf": "transformers encoders (default configs)",
             "tasks": "torchvision segmentation, video and detection"}.get(provider, "torchvision classification")
    lines = [
        f"# Model zoo: {title}, traced and pruned",
        "",
        f"Generated by {made}, "
        f"{meta['date']}. Every model: random init, spec traced automatically (no hand-written spec), "
        f"rate {meta['rate']}, criterion l1, `--skip-unsupported`, soft == hard verified (tolerance 1e-5 "
        "relative), ONNX exported and compared with onnxruntime (atol 1e-4).",
        "",
        f"**{len(ok)} / {len(rows)} pruned and verified**; {len(strict)} of them trace without "
        "`--skip-unsupported` (nothing pinned except the classifier output). 'pinned' counts the layers left "
        "unpruned because their channels reach the output or an op prunectl cannot cut through "
        "(the op is named in the last column). Errors are absolute max |diff|; both checks are relative, "
        "`<= tol * max(1, max|output|)`; 'max abs output' is the original model's largest output, so a check "
        "on near-zero outputs shows. Before pruning, zero-initialised weights (ViT's head) get small random "
        "values and BatchNorm statistics are set from one random batch, so random-init outputs are O(1)"
        + ("." if provider == "torchvision" else
           ". 'input' is the image size, or the number of tokens for text models (int64 ids)."),
        "",
        "| model | input | params before -> after | MACs before -> after | soft-vs-hard | ONNX err | "
        "max abs output | s | "
        "pinned | strict | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] in ("ok", "no-reduction"):
            note = "; ".join(r.get("pinned_by_ops", []))[:160]
            if r.get("tracer", "torch.fx") != "torch.fx":
                note = f"traced by {r['tracer']}; {note}"
            if r.get("module"):
                note = f"--module {r['module']} (MACs: the {r['module']}'s); {note}"
            onnx = r.get("onnx_max_abs")
            lines.append(
                f"| {r['model']} | {_input_label(r['input'])} | {_m(r['params_before'])} -> {_m(r['params_after'])} | "
                f"{_m(r['macs_before'])} -> {_m(r['macs_after'])} | {r['soft_vs_hard']:.1e} | "
                f"{'-' if onnx is None else f'{onnx:.1e}'} | {_e(r.get('output_max_abs'))} | {r['seconds']} | "
                f"{r['pinned_layers']}/{r['layers']} | "
                f"{'yes' if r.get('strict_trace') == 'ok' else 'no'} | {r['status'] if r['status'] != 'ok' else ''}"
                f"{_escape(note)} |")
        else:
            lines.append(f"| {r['model']} | {_input_label(r.get('input', ['?']))} | | | | | | "
                         f"{r.get('seconds', '')} | | | "
                         f"**{r['status']}**: {_escape(r.get('error', ''))[:300]} |")
    missing = [name for name in all_models(provider) if name not in {r["model"] for r in rows}]
    if missing:
        lines += ["", f"Not run yet ({len(missing)}, the largest models; `make zoo ZOO_MODELS=\"...\"` runs them): "
                  + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _input_label(shape: list) -> str:
    """The image side, the token count, or frames x height x width for a video."""
    return "x".join(map(str, shape[2:])) if len(shape) == 5 else str(shape[-1])


def _m(value: int) -> str:
    return f"{value / 1e6:.2f}M" if value < 1e9 else f"{value / 1e9:.2f}G"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def all_models(provider: str = "torchvision") -> list[str]:
    if provider == "tasks":
        return _task_models()
    if provider in ("timm", "hf"):
        return list(TIMM_MODELS if provider == "timm" else HF_MODELS)
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    return [n for n in names if n not in HEAVY] + [n for n in HEAVY if n in names]


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(run_one(*argv[1:3])), flush=True)
        return
    if argv[:1] == ["--llm"]:  # decoder LLM families: their own script (benchmarks/zoo_llm.py)
        subprocess.run([sys.executable, str(Path(__file__).with_name("zoo_llm.py")), *argv[1:]], check=True)
        return
    if argv[:1] == ["--timm-wide"]:  # one small model of every timm architecture, with Torch-Pruning
        subprocess.run([sys.executable, str(Path(__file__).with_name("zoo_timm_wide.py")), *argv[1:]], check=True)
        return
    if argv[:1] in (["--timm"], ["--hf"], ["--tasks"]):
        provider = argv[0][2:]
        sweep(argv[1:] or all_models(provider), ROOT / "docs" / "results" / f"zoo_{provider}.json", provider)
        return
    sweep(argv or all_models(), ROOT / "docs" / "results" / "zoo.json")


if __name__ == "__main__":
    main(sys.argv[1:])
