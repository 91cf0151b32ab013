"""hf/ in a bundle: a decoder pruned at 0.3 is written as a folder stock ``from_pretrained`` loads in a
fresh process (same logits as prunectl.load, generate() runs); a Hugging Face folder is a checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prunectl
from prunectl.errors import CheckpointError, VerificationError
from prunectl.models import factory

pytest.importorskip("transformers")

ARGS = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}
FRESH = """
import sys, torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save({"logits": model(ids).logits, "generated": model.generate(ids, max_new_tokens=3, do_sample=False)},
               sys.argv[3])
"""


def _checkpoint(tmp_path: Path, args: dict) -> Path:
    torch.manual_seed(0)
    model = factory.build("hf:LlamaForCausalLM", args).eval()
    path = tmp_path / "llm.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": "hf:LlamaForCausalLM", "args": args}}, path)
    return path


def test_the_pruned_decoder_loads_with_stock_from_pretrained_in_a_fresh_process(tmp_path: Path) -> None:
    result = prunectl.prune(_checkpoint(tmp_path, ARGS), prunectl.PruneOptions(rate=0.3, output=tmp_path / "out"))
    assert result.manifest.extra["hf"] == {"written": True, "config": "LlamaConfig"}
    config = json.loads((tmp_path / "out" / "hf" / "config.json").read_text())
    # hidden and MLP widths cut; head_dim written explicitly so RoPE's head size stays 16
    assert config["hidden_size"] < 64 and config["intermediate_size"] < 96 and config["head_dim"] == 16
    assert "hf/model.safetensors" in result.manifest.files
    ids = torch.randint(0, ARGS["vocab_size"], (1, 12))
    torch.save(ids, tmp_path / "ids.pt")
    subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "out" / "hf"), str(tmp_path / "ids.pt"),
                    str(tmp_path / "stock.pt")], check=True, capture_output=True)
    stock = torch.load(tmp_path / "stock.pt")
    with torch.no_grad():
        assert torch.equal(stock["logits"], prunectl.load(tmp_path / "out").eval()(ids).logits)
    assert stock["generated"].shape == (1, 15)


def test_a_hugging_face_folder_is_a_checkpoint_and_its_tokenizer_files_travel(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = factory.build("hf:LlamaForCausalLM", ARGS).eval()
    model.save_pretrained(tmp_path / "folder")
    vocab = {f"w{i}": i for i in range(ARGS["vocab_size"])}
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="w0"))).save_pretrained(
        tmp_path / "folder")
    result = prunectl.prune(tmp_path / "folder", prunectl.PruneOptions(rate=0.3, output=tmp_path / "out"))
    hf = tmp_path / "out" / "hf"
    assert (hf / "tokenizer.json").read_bytes() == (tmp_path / "folder" / "tokenizer.json").read_bytes()
    assert result.report["params"]["after"] < result.report["params"]["before"]
    assert result.manifest.extra["hf"]["written"]
    (hf / "extra.safetensors").write_bytes(b"x")  # a file added to hf/ afterwards is caught
    with pytest.raises(VerificationError, match="not listed"):
        prunectl.load(tmp_path / "out")


def test_a_folder_that_is_neither_a_bundle_nor_a_model_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="without manifest.json or config.json"):
        prunectl.prune(tmp_path, prunectl.PruneOptions(rate=0.3))
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], **ARGS}))
    with pytest.raises(CheckpointError, match="without weights"):
        prunectl.prune(tmp_path, prunectl.PruneOptions(rate=0.3))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../outside.safetensors"}}))
    with pytest.raises(CheckpointError, match="not a file in the folder"):
        prunectl.prune(tmp_path, prunectl.PruneOptions(rate=0.3))


def test_widths_no_stock_config_holds_get_no_hf_folder_and_a_reason(tmp_path: Path) -> None:
    args = {"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 96, "max_position_embeddings": 32}
    torch.manual_seed(0)
    model = factory.build("hf:BertModel", args).eval()
    torch.save({"state_dict": model.state_dict(), "model": {"factory": "hf:BertModel", "args": args}},
               tmp_path / "bert.pt")
    result = prunectl.prune(tmp_path / "bert.pt", prunectl.PruneOptions(rate=0.5, input_shape=(1, 16),
                                                                     output=tmp_path / "out"))
    hf = result.manifest.extra["hf"]
    assert hf["written"] is False and "fit no stock BertConfig" in hf["reason"]
    assert not (tmp_path / "out" / "hf").exists()


def test_tied_weights_that_save_pretrained_left_out_are_filled_from_their_twin(tmp_path: Path) -> None:
    from safetensors import safe_open

    from prunectl.loading.checkpoint import load_checkpoint

    torch.manual_seed(0)
    model = factory.build("hf:LlamaForCausalLM", {**ARGS, "tie_word_embeddings": True}).eval()
    model.save_pretrained(tmp_path / "folder")
    with safe_open(str(tmp_path / "folder" / "model.safetensors"), "pt") as saved:
        assert "lm_head.weight" not in saved.keys()  # what makes the fill necessary
    loaded = load_checkpoint(tmp_path / "folder").model
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
