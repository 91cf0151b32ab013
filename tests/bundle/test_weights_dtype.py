"""prune --dtype: the model is loaded, scored, cut and saved in bfloat16 (or float16), the proof
still runs in float64, and the bundle (and its hf/) reloads in that dtype."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

import prunectl
from prunectl.cli import cli
from prunectl.errors import SpecError
from prunectl.models import factory
from tests.support.llm_families import LLM_FAMILIES

pytest.importorskip("transformers")


def _checkpoint(tmp_path: Path) -> Path:
    name, args = LLM_FAMILIES["llama"]
    torch.manual_seed(0)
    model = factory.build(name, args).eval()
    path = tmp_path / "llm.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": name, "args": args}}, path)
    return path


def _dtypes(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as weights:
        return {str(weights.get_slice(key).get_dtype()) for key in weights.keys()}


def test_a_bfloat16_run_saves_bfloat16_weights_and_reloads_in_bfloat16(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["prune", str(_checkpoint(tmp_path)), "--rate", "0.3", "--dtype", "bfloat16",
                                      "-q", "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dtype"] == "bfloat16"
    assert manifest["verify"]["precision"] == "float64"
    assert manifest["verify"]["soft_vs_hard_max_abs"] <= 1e-9 * max(1.0, manifest["verify"]["reference_max_abs"])
    assert _dtypes(out / "model.safetensors") == _dtypes(out / "hf" / "model.safetensors") == {"BF16"}
    assert manifest["hf"]["written"]
    assert json.loads((out / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded = prunectl.load(out)
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}
    assert reloaded.model.rotary_emb.inv_freq.dtype == torch.float32  # as transformers builds it in bfloat16
    stock = AutoModelForCausalLM.from_pretrained(out / "hf", dtype=torch.bfloat16).eval()
    ids = torch.randint(0, 128, (1, 12))
    with torch.no_grad():
        assert torch.equal(stock(ids).logits, reloaded(ids).logits)


def test_a_float32_run_records_no_dtype_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path)
    result = prunectl.prune(checkpoint, rate=0.3, dtype="float32")
    assert "dtype" not in result.manifest.to_json()  # default runs keep their bundle bytes
    with pytest.raises(SpecError, match="--dtype: expected one of bfloat16, float16, float32"):
        prunectl.prune(checkpoint, rate=0.3, dtype="int8")
