"""--drop-layers: whole decoder layers removed by block influence, proven against the original skipping them,
renumbered (layer_idx, per-layer config lists) so the result is a stock config; bad counts are exit 3."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import prunectl
from prunectl.cli import cli
from prunectl.models import factory
from tests.support.llm_families import LLM_FAMILIES

pytest.importorskip("transformers")


def _checkpoint(tmp_path: Path, family: str, layers: int = 4) -> tuple[Path, dict]:
    name, args = LLM_FAMILIES[family]
    args = {**args, "num_hidden_layers": layers}
    torch.manual_seed(0)
    path = tmp_path / f"{family}.pt"
    torch.save({"state_dict": factory.build(name, args).state_dict(), "model": {"factory": name, "args": args}}, path)
    return path, args


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_dropped_layers_are_the_least_influential_and_the_rest_is_renumbered(family: str, tmp_path: Path) -> None:
    checkpoint, args = _checkpoint(tmp_path, family)
    result = prunectl.prune(checkpoint, rate=0.3, drop_layers=2, output=tmp_path / "out")
    depth = result.manifest.extra["drop_layers"]
    influence = depth["block_influence"]
    assert len(influence) == 4 and depth["max_abs"] <= 1e-9  # the original skipping them computes the same
    kept = [i for i in range(4) if i not in depth["dropped"]]
    assert max(influence[i] for i in depth["dropped"]) <= min(influence[i] for i in kept)
    rebuild = result.manifest.rebuild["args"]
    assert rebuild["num_hidden_layers"] == 2
    if family == "gemma3":  # the per-layer attention kinds of the kept layers, in order
        original = factory.build(LLM_FAMILIES[family][0], args).config.layer_types
        assert rebuild["layer_types"] == [original[i] for i in kept]
    model = prunectl.load(tmp_path / "out").eval()
    assert len(model.model.layers) == 2 and [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    ids = torch.randint(0, args["vocab_size"], (1, 10))
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True)
        uncached = model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)  # the KV cache's slots follow the renumbering


def test_the_smaller_llama_is_a_stock_config(tmp_path: Path) -> None:
    checkpoint, _ = _checkpoint(tmp_path, "llama")
    prunectl.prune(checkpoint, rate=0.3, drop_layers=1, output=tmp_path / "out")
    config = json.loads((tmp_path / "out" / "hf" / "config.json").read_text())
    assert config["num_hidden_layers"] == 3


@pytest.mark.parametrize("count", ["4", "7", "0"])
def test_a_drop_of_every_layer_or_none_is_exit_3(count: str, tmp_path: Path) -> None:
    checkpoint, _ = _checkpoint(tmp_path, "llama")
    result = CliRunner().invoke(cli, ["prune", str(checkpoint), "--drop-layers", count, "-o", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    assert "--drop-layers" in result.output and not (tmp_path / "out").exists()


def test_a_model_without_decoder_layers_says_so(tmp_path: Path) -> None:
    from tests.support.trace_models import TwoBranchAdd

    torch.manual_seed(0)
    checkpoint = tmp_path / "convs.pt"
    torch.save(TwoBranchAdd().state_dict(), checkpoint)
    with pytest.raises(prunectl.SpecError, match="no list of decoder layers"):
        prunectl.prune(checkpoint, model="tests.support.trace_models:TwoBranchAdd", input_shape=(1, 3, 8, 8),
                       drop_layers=1)
