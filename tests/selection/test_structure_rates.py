"""--rate-heads/--rate-mlp/--rate-hidden: each structure of a decoder cut at its own rate, recorded in the
manifest; a structure the model lacks, or a rate out of range, is exit 3."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import prunectl
from prunectl.cli import cli
from prunectl.models import factory
from tests.support.llm_families import LLM_FAMILIES

pytest.importorskip("transformers")


def _checkpoint(tmp_path: Path) -> tuple[Path, dict]:
    name, args = LLM_FAMILIES["llama"]
    torch.manual_seed(0)
    path = tmp_path / "llama.pt"
    torch.save({"state_dict": factory.build(name, args).state_dict(), "model": {"factory": name, "args": args}}, path)
    return path, args


def test_each_structure_is_cut_at_its_own_rate(tmp_path: Path) -> None:
    checkpoint, args = _checkpoint(tmp_path)
    result = prunectl.prune(checkpoint, rate=0.0, rate_mlp=0.5, rate_hidden=0.25, output=tmp_path / "out")
    layer = result.model.model.layers[0]
    assert layer.mlp.gate_proj.out_features == 48  # 96 at 0.5
    assert result.model.model.embed_tokens.embedding_dim == 48  # 64 at 0.25
    assert layer.self_attn.k_proj.out_features == 32  # heads at --rate 0: whole
    assert result.manifest.extra["structure_rates"] == {"mlp": 0.5, "hidden": 0.25}
    heads_only = prunectl.prune(checkpoint, rate=0.0, rate_heads=0.5)
    attention = heads_only.model.model.layers[0].self_attn
    assert (attention.k_proj.out_features, attention.q_proj.out_features) == (16, 32)  # one KV group of two
    assert heads_only.model.model.layers[0].mlp.gate_proj.out_features == args["intermediate_size"]


@pytest.mark.parametrize("flags, message", [
    (["--rate-mlp", "1.5"], "--rate-mlp: expected a number in [0, 1)"),
    (["--rate-hidden", "0.2", "--model", "tests.support.trace_models:TwoBranchAdd", "--input-shape", "1,3,8,8"],
     "--rate-hidden: TwoBranchAdd has no input embedding"),
])
def test_bad_structure_rates_are_exit_3(flags: list[str], message: str, tmp_path: Path) -> None:
    if "--model" in flags:
        from tests.support.trace_models import TwoBranchAdd

        checkpoint = tmp_path / "convs.pt"
        torch.save(TwoBranchAdd().state_dict(), checkpoint)
    else:
        checkpoint, _ = _checkpoint(tmp_path)
    result = CliRunner().invoke(cli, ["prune", str(checkpoint), *flags, "-o", str(tmp_path / "out")])
    assert result.exit_code == 3 and message in result.output, result.output
    assert not (tmp_path / "out").exists()
