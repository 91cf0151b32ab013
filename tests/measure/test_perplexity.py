"""Perplexity: equal to exp(mean NLL) from the model's own loss (transformers' strided protocol, by
hand), through ``prunectl eval`` on a folder and a bundle, and before/after in ``prune --eval-data``."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import prunectl
from prunectl.cli import cli
from tests.support.text_models import llama_folder, tiny_llama, word_tokenizer, words

pytest.importorskip("transformers")


def _by_hand(model: torch.nn.Module, ids: torch.Tensor, seq_len: int, stride: int) -> float:
    """transformers' perplexity guide, line for line: the loss of each window on its new tokens."""
    nlls, counted, previous_end = [], 0, 0
    for begin in range(0, ids.numel(), stride):
        end = min(begin + seq_len, ids.numel())
        target_length = end - previous_end
        window = ids[begin:end].unsqueeze(0)
        labels = window.clone()
        labels[:, :-target_length] = -100
        with torch.no_grad():
            loss = model(window, labels=labels).loss
        valid = int((labels[:, 1:] != -100).sum())
        nlls.append(loss.double() * valid)
        counted += valid
        previous_end = end
        if end == ids.numel():
            break
    return math.exp(float(torch.stack(nlls).sum()) / counted)


@pytest.mark.parametrize("stride", [16, 8])
def test_perplexity_is_exp_of_the_mean_nll_of_the_model_own_loss(stride: int) -> None:
    model = tiny_llama()
    text = words(64)
    tokenizer = word_tokenizer()
    result = prunectl.evaluate_perplexity(model, tokenizer, text, seq_len=16, stride=stride)
    ids = torch.tensor(tokenizer.encode(text).ids)
    assert ids.numel() == 64
    assert result.perplexity == pytest.approx(_by_hand(model, ids, 16, stride), rel=1e-6)
    assert (result.seq_len, result.stride, result.dtype) == (16, stride, "float32")
    assert result.tokens == (60 if stride == 16 else 63) and result.windows == (4 if stride == 16 else 7)
    assert prunectl.evaluate_perplexity(model, ids, seq_len=16, stride=stride, max_tokens=32).tokens == \
        (30 if stride == 16 else 31)  # the first 32 tokens only
    assert prunectl.evaluate_perplexity(model, ids, seq_len=16, stride=stride) == result.__class__(
        **{**result.to_json(), "source": "token ids"})  # ids or tokenizer + text: the same number


def test_eval_command_on_a_folder_and_on_a_bundle_and_prune_eval_data(tmp_path: Path) -> None:
    folder = llama_folder(tmp_path / "folder")
    text = tmp_path / "text.txt"
    text.write_text(words(600), encoding="utf-8")
    runner = CliRunner()
    shown = runner.invoke(cli, ["eval", str(folder), "--data", str(text), "--seq-len", "32", "--json"])
    assert shown.exit_code == 0, shown.output
    measured = json.loads(shown.output)
    real = subprocess.run([sys.executable, "-m", "prunectl", "eval", str(folder), "--data", str(text), "--seq-len",
                           "32", "--json"], capture_output=True, text=True)  # one real process
    assert real.returncode == 0 and json.loads(real.stdout)["perplexity"] == measured["perplexity"], real.stderr
    model = tiny_llama()
    ids = torch.tensor(word_tokenizer().encode(text.read_text()).ids)
    assert measured["perplexity"] == pytest.approx(_by_hand(model, ids, 32, 32), rel=1e-6)
    assert {key: measured[key] for key in ("seq_len", "stride", "tokens", "windows", "dtype")} == \
        {"seq_len": 32, "stride": 32, "tokens": 600 - 600 // 32 - 1, "windows": 19, "dtype": "float32"}

    out = tmp_path / "out"
    pruned = runner.invoke(cli, ["prune", str(folder), "--rate", "0.3", "--eval-data", str(text), "-o", str(out)])
    assert pruned.exit_code == 0, pruned.output
    assert "perplexity" in pruned.output and "windows of 256" in pruned.output
    report = json.loads((out / "report.json").read_text())["perplexity"]
    assert report["before"] == pytest.approx(_by_hand(model, ids, 256, 256), rel=1e-6)
    assert report["after"] == pytest.approx(_by_hand(prunectl.load(out).eval(), ids, 256, 256), rel=1e-6)
    assert report["protocol"] == {"tokens": 597, "windows": 3, "seq_len": 256, "stride": 256, "dtype": "float32",
                                  "source": str(text)}
    on_bundle = runner.invoke(cli, ["eval", str(out), "--data", str(text)])  # the tokenizer from the bundle's hf/
    assert on_bundle.exit_code == 0 and f"perplexity {report['after']:.4f}" in on_bundle.output, on_bundle.output
    assert "597 tokens" in on_bundle.output and "stride 256" in on_bundle.output and "float32" in on_bundle.output


def test_text_shorter_than_a_window_or_no_tokenizer_is_one_line_exit_3(tmp_path: Path) -> None:
    folder = llama_folder(tmp_path / "folder")
    bare = llama_folder(tmp_path / "bare", tokenizer=False)
    text = tmp_path / "text.txt"
    text.write_text(words(100), encoding="utf-8")
    runner = CliRunner()
    for args, message in (([str(folder), "--data", str(text)], f"{text}: 100 tokens, fewer than one window of 256"),
                          ([str(bare), "--data", str(text)], f"--data {text}: text needs the model's tokenizer")):
        result = runner.invoke(cli, ["eval", *args])
        assert result.exit_code == 3 and len(result.output.strip().splitlines()) == 1, result.output
        assert message in result.output
