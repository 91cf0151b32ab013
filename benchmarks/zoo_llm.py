"""Decoder-LLM sweep: every family prunectl supports, as a small random-init config, pruned at 0.3.

    .venv/bin/python benchmarks/zoo_llm.py [FAMILY ...]   # -> docs/results/zoo_llm.md / .json
    make zoo ZOO_MODELS=--llm

Each family runs in its own subprocess: ``prunectl prune`` strict (no ``--skip-unsupported``) at
rate 0.3 and, in a second row, 0.5 (where whole KV groups go), soft == hard in float64, the
bundle reloaded; cached greedy decoding (8 tokens) equal to uncached; and where the bundle has
an ``hf/`` folder, stock ``AutoModelForCausalLM.from_pretrained`` in a fresh process giving the
logits ``prunectl.load`` gives. A family that cannot be cut is a row with its exit message.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "zoo_llm.json"
RATES = (0.3, 0.5)
TIMEOUT_S = 600
_BASE = {"vocab_size": 256, "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4,
         "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 128}
# family -> (factory, args): grouped-query attention everywhere but GPT-2 (which has none)
FAMILIES = {
    "llama (GQA 8 on 4)": ("hf:LlamaForCausalLM", _BASE),
    "llama (9 on 3, SmolLM2's groups, tied)": ("hf:LlamaForCausalLM", {
        **_BASE, "hidden_size": 144, "num_attention_heads": 9, "num_key_value_heads": 3,
        "tie_word_embeddings": True}),
    "mistral": ("hf:MistralForCausalLM", _BASE),
    "qwen2": ("hf:Qwen2ForCausalLM", _BASE),
    "qwen3 (q_norm/k_norm)": ("hf:Qwen3ForCausalLM", {**_BASE, "head_dim": 32}),
    "gemma2 (soft-capping, sliding)": ("hf:Gemma2ForCausalLM", {**_BASE, "head_dim": 48, "sliding_window": 16}),
    "gemma3 (head_dim 48, sliding)": ("hf:Gemma3ForCausalLM", {**_BASE, "head_dim": 48, "sliding_window": 16}),
    "phi3 (fused qkv, gate_up)": ("hf:Phi3ForCausalLM", {**_BASE, "pad_token_id": 0}),
    "gpt2 (Conv1D, fused c_attn)": ("hf:GPT2LMHeadModel", {"vocab_size": 256, "n_embd": 128, "n_layer": 4,
                                                           "n_head": 4, "n_positions": 128}),
}
FRESH = """
import sys, torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[2])).logits, sys.argv[3])
"""


def run_one(family: str, rate: float) -> dict:
    import torch

    import prunectl
    from prunectl.errors import PrunectlError
    from prunectl.models import factory

    name, args = FAMILIES[family]
    row: dict = {"family": family, "factory": name, "rate": rate}
    torch.manual_seed(0)
    model = factory.build(name, args).eval()
    before = _heads(model)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, out = Path(tmp) / "llm.pt", Path(tmp) / "out"
        torch.save({"state_dict": model.state_dict(), "model": {"factory": name, "args": args}}, checkpoint)
        start = time.perf_counter()
        try:
            result = prunectl.prune(checkpoint, rate=rate, output=out)
        except PrunectlError as exc:
            return {**row, "status": "fail", "error": f"{type(exc).__name__} (exit {exc.exit_code}): {exc}"[:400],
                    "seconds": round(time.perf_counter() - start, 2)}
        row["seconds"] = round(time.perf_counter() - start, 2)
        manifest = result.manifest.to_json()
        pruned = prunectl.load(out).eval()
        ids = torch.randint(0, args["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            logits = pruned(ids).logits
            cached = pruned.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
            uncached = pruned.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
        row.update(status="ok", params_before=result.report["params"]["before"],
                   params_after=result.report["params"]["after"],
                   soft_vs_hard=manifest["verify"]["soft_vs_hard_max_abs"],
                   cache_equal=bool(torch.equal(cached, uncached)), hf=manifest["hf"])
        after = _heads(pruned)
        row["kv_heads"], row["query_heads"] = [before[1], after[1]], [before[0], after[0]]
        if "aligned" in result.report["selection"]:
            row["aligned"] = result.report["selection"]["aligned"]
        if manifest["hf"]["written"]:
            torch.save(ids, Path(tmp) / "ids.pt")
            subprocess.run([sys.executable, "-c", FRESH, str(out / "hf"), str(Path(tmp) / "ids.pt"),
                            str(Path(tmp) / "stock.pt")], check=True, capture_output=True)
            row["stock_from_pretrained_equal"] = bool(torch.equal(torch.load(Path(tmp) / "stock.pt"), logits))
    return row


def _heads(model) -> tuple[int, int]:
    """(query heads, KV heads) of the first attention: separate projections, Phi-3's sliced qkv_proj, or
    GPT-2's c_attn (q, k, v of equal width)."""
    if hasattr(model, "transformer"):
        attention = model.transformer.h[0].attn
        heads = attention.c_attn.nf // 3 // attention.head_dim
        return heads, heads
    attention = model.model.layers[0].self_attn
    head_dim = attention.head_dim
    if hasattr(attention, "qkv_proj"):
        kv = attention.num_key_value_heads
        return attention.qkv_proj.out_features // head_dim - 2 * kv, kv
    return attention.q_proj.out_features // head_dim, attention.k_proj.out_features // head_dim


def sweep(families: list[str]) -> list[dict]:
    rows = {(r["family"], r["rate"]): r for r in json.loads(OUT.read_text())["models"]} if OUT.exists() else {}
    for family in families:
        for rate in RATES:
            start = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, __file__, "--one", family, str(rate)], capture_output=True,
                                      text=True, timeout=TIMEOUT_S, cwd=ROOT)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
                row = json.loads(lines[-1]) if lines else {
                    "family": family, "rate": rate, "status": "crash",
                    "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:400]}
            except subprocess.TimeoutExpired:
                row = {"family": family, "rate": rate, "status": "timeout", "error": f"over {TIMEOUT_S}s"}
            row["wall_s"] = round(time.perf_counter() - start, 1)
            rows[(family, rate)] = row
            print(f"{family:42s} {rate} {row['status']:6s} {row.get('error', '')[:120]}", flush=True)
            write(list(rows.values()))
    return list(rows.values())


def write(rows: list[dict]) -> None:
    import torch
    import transformers

    order = {family: i for i, family in enumerate(FAMILIES)}
    rows = sorted(rows, key=lambda r: (order.get(r["family"], 1 << 30), r["rate"]))
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d")}
    OUT.write_text(json.dumps({"meta": meta, "models": rows}, indent=1) + "\n")
    OUT.with_suffix(".md").write_text(markdown(rows, meta))


def markdown(rows: list[dict], meta: dict) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [
        "# Decoder LLMs: every family, traced, pruned, proven, reloaded",
        "",
        f"Generated by `make zoo ZOO_MODELS=--llm` (`benchmarks/zoo_llm.py`), {meta['date']}; torch {meta['torch']}, "
        f"transformers {meta['transformers']}. Small random-init configs (hidden 128, 4 layers), strict trace (no "
        "`--skip-unsupported`), criterion l1, one rate for heads, MLP and hidden width (what the selection moved "
        "for a stock config, GPT-2's hidden width to the kept heads and Gemma's kept whole, is listed below the "
        "table). soft == hard is checked "
        "in float64 (tolerance 1e-9 relative); 'cache' is 8 greedy tokens with the KV cache equal to without; "
        "'stock' is `AutoModelForCausalLM.from_pretrained(bundle/hf)` in a fresh process giving exactly the logits "
        "`prunectl.load` gives. KV/query heads: before -> after (a KV group goes with its query heads).",
        "",
        f"**{len(ok)} / {len(rows)} runs pruned and proven.**",
        "",
        "| family | rate | params before -> after | KV heads | query heads | soft-vs-hard | cache | hf/ | stock | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['family']} | {r['rate']} | | | | | | | | **{r['status']}**: "
                         f"{r.get('error', '').replace('|', '/')[:300]} |")
            continue
        hf = "written" if r["hf"]["written"] else f"no: {r['hf']['reason'].split(';')[0]}"
        stock = {True: "equal", False: "DIFFERENT", None: "-"}[r.get("stock_from_pretrained_equal")]
        lines.append(f"| {r['family']} | {r['rate']} | {r['params_before'] / 1e6:.3f}M -> "
                     f"{r['params_after'] / 1e6:.3f}M | {_before_after(r, 'kv_heads')} | "
                     f"{_before_after(r, 'query_heads')} | "
                     f"{r['soft_vs_hard']:.1e} | {'equal' if r['cache_equal'] else 'DIFFERENT'} | {hf} | {stock} | "
                     f"{r['seconds']} |")
    notes = [f"- {r['family']} at {r['rate']}: {note}" for r in ok for note in r.get("aligned", [])]
    if notes:
        lines += ["", "Widths the selection moved so that a stock config holds them (`report.json` "
                  "`selection.aligned`):", ""] + notes
    return "\n".join(lines) + "\n"


def _before_after(row: dict, key: str) -> str:
    return "-" if key not in row else f"{row[key][0]} -> {row[key][1]}"


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(run_one(argv[1], float(argv[2]))), flush=True)
        return
    unknown = [name for name in argv if name not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown family {unknown[0]!r}; one of: {', '.join(FAMILIES)}")
    sweep(argv or list(FAMILIES))


if __name__ == "__main__":
    main(sys.argv[1:])
