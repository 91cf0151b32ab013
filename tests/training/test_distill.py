"""finetune --distill: a pruned tiny decoder trained toward the original's logits gets closer to it
(KL before > after), deterministically, the original found from the manifest's source; a teacher with
another vocabulary or no teacher to be found is one line and exit 5, text shorter than one window or
without a tokenizer one line and exit 3, nothing written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_clean_failure, invoke

import prunectl
from prunectl.cli import cli
from tests.support.text_models import llama_folder, pruned_llama, tiny_llama, words

pytest.importorskip("transformers")


def test_distillation_brings_the_pruned_model_closer_to_the_original_deterministically(tmp_path: Path) -> None:
    bundle, text = pruned_llama(tmp_path)
    runner = CliRunner()
    outputs = []
    for run in ("a", "b"):
        result = runner.invoke(cli, ["finetune", str(bundle), "--distill", "--data", str(text), "--steps", "12",
                                     "--lr", "3e-3", "--calib-seq-len", "32", "--calib-tokens", "256",
                                     "--eval-data", str(text), "-o", str(tmp_path / run), "--json"])
        assert result.exit_code == 0, result.output
        outputs.append(tmp_path / run)
    shown = json.loads(result.output)
    assert shown["kl_after"] < shown["kl_before"]
    assert shown["perplexity"]["protocol"]["seq_len"] == 256
    report = json.loads((outputs[0] / "report.json").read_text())["distill"]
    assert report["teacher"] == "original" and report["data"]["windows"] == 8 and len(report["log"]) == 12
    assert (outputs[0] / "model.safetensors").read_bytes() == (outputs[1] / "model.safetensors").read_bytes()
    assert (outputs[0] / "hf" / "tokenizer.json").is_file()  # the tokenizer travels with the new bundle
    prunectl.load(outputs[0])  # checksums, recipe and weights agree


def test_a_teacher_of_another_vocabulary_or_none_found_is_exit_5(tmp_path: Path) -> None:
    bundle, text = pruned_llama(tmp_path)
    other = tiny_llama(vocab_size=100)
    other.save_pretrained(tmp_path / "other")
    runner = CliRunner()
    args = ["finetune", str(bundle), "--distill", "--data", str(text), "--steps", "2", "-o", str(tmp_path / "out")]
    result = runner.invoke(cli, [*args, "--teacher", str(tmp_path / "other")])
    assert result.exit_code == 5 and "embeds 100 token ids, the bundle's model 128" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    shutil.rmtree(tmp_path / "original")
    result = runner.invoke(cli, args)
    assert result.exit_code == 5 and "'original' is not beside the bundle" in result.output, result.output
    assert not (tmp_path / "out").exists()
    usage = runner.invoke(cli, ["finetune", str(bundle), "--distill", "--data", str(text)])
    assert usage.exit_code == 2 and "--steps N" in usage.output


def test_text_shorter_than_a_window_or_without_a_tokenizer_is_one_line_exit_3(tmp_path: Path) -> None:
    bundle, _ = pruned_llama(tmp_path)
    short = tmp_path / "short.txt"
    short.write_text(words(10), encoding="utf-8")
    out = tmp_path / "out"
    args = ["finetune", bundle, "--distill", "--steps", "2", "--calib-seq-len", "32", "-o", out]
    assert_clean_failure(invoke(*args, "--data", short), 3, str(short), "fewer than one window of 32", out=out)
    bare = llama_folder(tmp_path / "bare", tokenizer=False)  # a teacher and a bundle without a tokenizer
    prunectl.prune(bare, prunectl.PruneOptions(rate=0.3, output=tmp_path / "bare-pruned"))
    text = tmp_path / "calib.txt"
    result = invoke("finetune", tmp_path / "bare-pruned", "--distill", "--data", text, "--steps", "2",
                    "--teacher", bare, "-o", out)
    assert_clean_failure(result, 3, str(text), "text needs the model's tokenizer", out=out)
    assert not (tmp_path / "out.distill-state").exists()
