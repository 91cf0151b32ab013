"""How much closer to the original `--bias-compensation` brings a pruned model, on tiny models.

The same cut with and without compensation; the root-mean-square difference of the pruned model's
outputs from the original's on the calibration data the means came from, and on held-out data:

- the tests' tiny Llama (random init; `--train-steps N`: after N AdamW steps on the text first),
  word-level text from tests/support/text_models.py, 1,024 calibration tokens in windows of 32;
- the AlexNet, VGG11BN and ResNet18 fixtures (random init, BatchNorm statistics drawn as a trained
  model's), 32 random images as data, 8 others held out.

    .venv/bin/python benchmarks/bias_compensation.py                  # ~2 min on one core
    .venv/bin/python benchmarks/bias_compensation.py --train-steps 150

Writes docs/results/bench/bias_compensation.json (no plot: a handful of numbers, in docs/llm.md).
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from _common import print_table, write_results

LLAMA_CUTS = {"MLP 50%": {"rate": 0, "rate_mlp": 0.5}, "1 of 2 KV groups": {"rate": 0, "rate_heads": 0.5},
              "MLP 50% + 1 KV group": {"rate": 0, "rate_mlp": 0.5, "rate_heads": 0.5}, "--rate 0.3": {"rate": 0.3}}


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).double().pow(2).mean().sqrt())


def llama_rows(train_steps: int) -> list[dict[str, Any]]:
    import prunectl
    from prunectl.loading.text_data import load_calibration
    from prunectl.loading.tokenizer import find_tokenizer
    from tests.support.text_models import llama_folder, tiny_llama, words

    work = Path(tempfile.mkdtemp(prefix="bias-compensation-"))
    original = tiny_llama()
    (work / "text.txt").write_text(words(6000))
    (work / "held.txt").write_text(words(3000, seed=1))
    tokenizer = find_tokenizer(None, llama_folder(work / "tokenizer", original))
    windows = {name: torch.cat([x for x, _ in load_calibration(work / f"{name}.txt", original, tokenizer, 32,
                                                               tokens, 0).batches])
               for name, tokens in (("text", 4096 if train_steps else 1024), ("held", 1024))}
    if train_steps:  # a model with some structure: next-word statistics of the text
        torch.manual_seed(0)
        optimizer = torch.optim.AdamW(original.parameters(), lr=3e-3)
        original.train()
        for step in range(train_steps):
            start = (step * 16) % len(windows["text"])
            batch = windows["text"][start:start + 16]
            loss = original(batch, labels=batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        original.eval()
    folder = llama_folder(work / "folder", original)
    # the windows prunectl draws for --calib-tokens 1024 (same file, tokenizer and seed): the means' data
    calibration = torch.cat([x for x, _ in load_calibration(work / "text.txt", original, tokenizer, 32, 1024, 0)
                             .batches])
    rows = []
    with torch.no_grad():
        reference = {"calib": original(calibration).logits, "held": original(windows["held"]).logits}
    for label, cut in LLAMA_CUTS.items():
        row: dict[str, Any] = {"model": f"tiny Llama{f' trained {train_steps} steps' if train_steps else ''}",
                               "cut": label}
        for compensate in (False, True):
            pruned = prunectl.prune(folder, data=str(work / "text.txt"), calib_seq_len=32, calib_tokens=1024,
                                    bias_compensation=compensate, **cut).model
            with torch.no_grad():
                row[f"calib_{'with' if compensate else 'without'}"] = _rms(pruned(calibration).logits,
                                                                           reference["calib"])
                row[f"held_{'with' if compensate else 'without'}"] = _rms(pruned(windows["held"]).logits,
                                                                          reference["held"])
        rows.append(row)
    return rows


CNNS = {"AlexNet fixture": ("AlexNet", {"out_ch_conv1": 8, "out_ch_conv2": 16, "out_ch_conv3": 16, "out_ch_conv4": 16,
                                         "out_ch_conv5": 16, "out_ch_fc1": 32, "out_ch_fc2": 32}),
        # convs without bias, each before a BatchNorm: the shift goes into its running mean
        "VGG11BN fixture": ("VGG11BN", {**{f"out_ch_conv{i}": 16 for i in range(1, 9)}, "out_ch_fc1": 32}),
        "ResNet18 fixture": ("ResNet18", {})}


def _with_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm running statistics as a trained model has them (fresh ones are 0 and 1)."""
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.running_mean.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        norm.running_var.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(2))
    return model


def cnn_rows() -> list[dict[str, Any]]:
    import prunectl
    from fixtures import models

    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 10, (8,), generator=generator))
               for _ in range(4)]
    held = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    rows = []
    for (label, (name, args)), rate in [(item, rate) for item in CNNS.items() for rate in (0.3, 0.5)]:
        row: dict[str, Any] = {"model": label, "cut": f"--rate {rate}"}
        for compensate in (False, True):
            torch.manual_seed(0)
            model = _with_statistics(getattr(models, name)(**args).eval())
            original = getattr(models, name)(**args).eval()
            original.load_state_dict(model.state_dict())
            pruned = prunectl.prune(model, factory_args=args, example_inputs=batches[0][0][:1], data=batches,
                                    rate=rate, bias_compensation=compensate).model
            with torch.no_grad():
                calib = [(pruned(x) - original(x)).double().pow(2).mean() for x, _ in batches]
                row[f"calib_{'with' if compensate else 'without'}"] = float(torch.stack(calib).mean().sqrt())
                row[f"held_{'with' if compensate else 'without'}"] = _rms(pruned(held), original(held))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=0, help="Train the tiny Llama this many steps first.")
    options = parser.parse_args()
    warnings.simplefilter("ignore")  # the hidden width's readers are reported, not compensated
    rows = llama_rows(options.train_steps) + cnn_rows()
    print_table("output RMS difference from the original (lower is closer)",
                ["model", "cut", "calib without", "calib with", "held-out without", "held-out with"],
                [[r["model"], r["cut"], *(f"{r[k]:.5f}" for k in ("calib_without", "calib_with", "held_without",
                                                                   "held_with"))] for r in rows])
    name = "bias_compensation" + (f"_trained{options.train_steps}" if options.train_steps else "")
    write_results(name, {"train_steps": options.train_steps, "rows": rows}, None, quick=False)


if __name__ == "__main__":
    main()
