"""--bias-compensation (FLAP): a tiny Llama pruned with text data gets down_proj and o_proj biases
holding the removed inputs' mean contribution, soft == hard still proven, its hf/ loads with stock
from_pretrained in a fresh process (mlp_bias/attention_bias set) and gives prunectl.load's logits,
and its logits are closer to the original's than without; a CNN whose fc already has a bias gets
exactly ``b + W[:, removed] @ mean``; a family whose config cannot add the bias is left
uncompensated with a warning and a report entry; bad input is one line and exit 3."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import prunectl
from fixtures.models import VGG11BN, AlexNet
from prunectl.cli import cli
from prunectl.formats.spec import ModelRef
from prunectl.loading.text_data import load_calibration
from prunectl.loading.tokenizer import find_tokenizer
from prunectl.models import factory
from prunectl.selection.bias_compensation import bias_flags
from tests.support.bias_models import ActivationBeforeNorm, BiasFlagMLP, NoBiasMLP
from tests.support.llm_families import LLM_FAMILIES
from tests.support.text_models import llama_folder, tiny_llama, words

pytest.importorskip("transformers")

FRESH = """
import sys, torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[2])).logits, sys.argv[3])
"""
TEXT = ["--calib-seq-len", "32", "--calib-tokens", "512"]


def _folder_and_text(tmp_path: Path) -> tuple[Path, Path]:
    text = tmp_path / "text.txt"
    text.write_text(words(3000), encoding="utf-8")
    return llama_folder(tmp_path / "folder"), text


def test_a_compensated_llama_is_proven_loads_stock_and_is_deterministic(tmp_path: Path) -> None:
    folder, text = _folder_and_text(tmp_path)
    for run in ("a", "b"):
        result = CliRunner().invoke(cli, ["prune", str(folder), "--data", str(text), *TEXT, "--rate", "0.3",
                                          "--rate-heads", "0.5", "--bias-compensation", *(["-q"] if run == "b" else []),
                                          "-o", str(tmp_path / run)])
        assert result.exit_code == 0, result.output
        if run == "a":  # the summary says what was compensated
            assert "bias compensation" in result.output and "4 readers" in result.output
    out = tmp_path / "a"
    for name in ("model.safetensors", "manifest.json", "report.json", "hf/model.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    manifest = json.loads((out / "manifest.json").read_text())
    verify = manifest["verify"]
    assert verify["soft_vs_hard_max_abs"] <= verify["tolerance"] * max(1.0, verify["reference_max_abs"])
    assert manifest["rebuild"]["args"]["mlp_bias"] is True and manifest["rebuild"]["args"]["attention_bias"] is True
    report = json.loads((out / "report.json").read_text())["bias_compensation"]
    compensated = {entry["layer"] for entry in report["readers"]}
    assert compensated == {f"model.layers.{i}.{p}" for i in (0, 1) for p in ("mlp.down_proj", "self_attn.o_proj")}
    assert all(entry["positions"] == 512 and entry["inputs_removed"] > 0 for entry in report["readers"])
    # the hidden width's readers sit behind RMSNorm: left, with the reason
    assert "lm_head" in {entry["layer"] for entry in report["uncompensated"]}
    assert report["args"] == {"mlp_bias": True, "attention_bias": True}
    config = json.loads((out / "hf" / "config.json").read_text())
    assert config["mlp_bias"] is True and config["attention_bias"] is True
    model = prunectl.load(out).eval()
    assert float(model.model.layers[0].mlp.down_proj.bias.detach().abs().max()) > 0  # the compensation itself
    assert float(model.model.layers[0].mlp.gate_proj.bias.detach().abs().max()) == 0  # what mlp_bias also builds: zeros
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    torch.save(ids, tmp_path / "ids.pt")
    subprocess.run([sys.executable, "-c", FRESH, str(out / "hf"), str(tmp_path / "ids.pt"), str(tmp_path / "stock.pt")],
                   check=True, capture_output=True)
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "stock.pt"), model(ids).logits)


def test_compensated_logits_are_closer_to_the_original_on_the_calibration_text(tmp_path: Path) -> None:
    folder, text = _folder_and_text(tmp_path)
    original = tiny_llama()
    windows = torch.cat([x for x, _ in load_calibration(text, original, find_tokenizer(None, folder), 32, 512, 0)
                         .batches])
    errors = {}
    for compensate in (False, True):
        result = prunectl.prune(folder, rate=0, rate_mlp=0.5, rate_heads=0.5, data=str(text), calib_seq_len=32,
                                calib_tokens=512, bias_compensation=compensate)
        with torch.no_grad():
            errors[compensate] = float((result.model(windows).logits - original(windows).logits).pow(2).mean())
    assert errors[True] < errors[False]


def _alexnet_case() -> tuple[torch.nn.Module, dict, list]:
    args = {"out_ch_conv1": 8, "out_ch_conv2": 16, "out_ch_conv3": 16, "out_ch_conv4": 16, "out_ch_conv5": 16,
            "out_ch_fc1": 32, "out_ch_fc2": 32}
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 10, (8,), generator=generator))
               for _ in range(4)]
    return AlexNet(**args).eval(), args, batches


def test_a_cnn_reader_with_a_bias_gets_the_mean_of_its_removed_inputs(tmp_path: Path) -> None:
    model, args, batches = _alexnet_case()
    original = AlexNet(**args).eval()
    original.load_state_dict(model.state_dict())
    inputs = []
    handle = original.fc1.register_forward_pre_hook(lambda module, x: inputs.append(x[0].double()))
    with torch.no_grad():
        for x, _ in batches:
            original(x)
    handle.remove()
    mean = torch.cat(inputs).mean(0)
    result = prunectl.prune(model, factory_args=args, example_inputs=batches[0][0][:1], data=batches, rate=0.5,
                            bias_compensation=True, output=tmp_path / "out")
    verify = result.manifest.extra["verify"]
    assert verify["soft_vs_hard_max_abs"] <= verify["tolerance"] * max(1.0, verify["reference_max_abs"])
    kept = result.plan["fc1"].inp
    removed = torch.tensor(sorted(set(range(original.fc1.in_features)) - set(kept.tolist())))
    expected = original.fc1.bias.double() + original.fc1.weight.double()[:, removed] @ mean[removed]
    pruned = prunectl.load(tmp_path / "out")
    assert torch.allclose(pruned.fc1.bias.double(), expected[result.plan["fc1"].out], atol=1e-6)
    layers = {entry["layer"] for entry in result.report["bias_compensation"]["readers"]}
    assert {"conv3", "conv5", "fc1", "fc2", "fc3"} <= layers
    assert "args" not in result.report["bias_compensation"]  # every reader already had its bias
    errors = {}
    for compensate in (False, True):
        again, _, _ = _alexnet_case()
        pruned = prunectl.prune(again, factory_args=args, example_inputs=batches[0][0][:1], data=batches, rate=0.5,
                                bias_compensation=compensate).model
        with torch.no_grad():
            errors[compensate] = sum(float((pruned(x) - original(x)).pow(2).mean()) for x, _ in batches)
    assert errors[True] < errors[False]


def test_a_reader_no_config_field_can_give_a_bias_is_left_with_a_warning(tmp_path: Path) -> None:
    name, args = LLM_FAMILIES["qwen2"]
    torch.manual_seed(0)
    model = factory.build(name, args).eval()
    checkpoint = tmp_path / "qwen2.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": name, "args": args}}, checkpoint)
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    torch.save(ids, tmp_path / "ids.pt")
    with pytest.warns(UserWarning, match="left uncompensated.*has no bias"):
        result = prunectl.prune(checkpoint, rate=0, rate_mlp=0.5, data=str(tmp_path / "ids.pt"),
                                bias_compensation=True)
    left = {entry["layer"]: entry["reason"] for entry in result.report["bias_compensation"]["uncompensated"]}
    assert "no argument of hf:Qwen2ForCausalLM builds it with one" in left["model.layers.0.mlp.down_proj"]
    assert result.report["bias_compensation"]["readers"] == []
    assert result.model.model.layers[0].mlp.down_proj.bias is None


@pytest.mark.parametrize("extra, message", [
    ([], "--bias-compensation: needs --data"),
    (["--data", "DATA", "--mode", "unstructured"], "--bias-compensation: unstructured pruning removes no input"),
])
def test_bad_bias_compensation_options_are_one_line_and_exit_3(tmp_path: Path, extra: list, message: str) -> None:
    folder, text = _folder_and_text(tmp_path)
    extra = [str(text) if item == "DATA" else item for item in extra]
    result = CliRunner().invoke(cli, ["prune", str(folder), "--bias-compensation", *extra, "-o", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    assert result.output.strip().splitlines() == [f"error: {result.output.strip()[7:]}"]
    assert message in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family, flags", [("llama", {"attention_bias", "mlp_bias"}), ("gemma2", {"attention_bias"}),
                                           ("qwen2", set()), ("mistral", set())])
def test_the_bias_flags_a_config_offers_are_found_by_building_it(family: str, flags: set) -> None:
    name, args = LLM_FAMILIES[family]
    model = factory.build(name, args)
    found = bias_flags(ModelRef(name, args), model)  # args without the flags: they are the config's defaults
    assert set(found) == flags
    config = model.config.to_dict()  # a folder's config.json holds every field
    assert bias_flags(ModelRef(name, {**args, **{k: v for k, v in config.items() if "bias" in k}}), model) == found
    if "mlp_bias" in found:
        assert found["mlp_bias"] == {f"model.layers.{i}.mlp.{p}_proj" for i in (0, 1) for p in ("gate", "up", "down")}


def test_a_user_class_with_a_bias_argument_is_rebuilt_with_the_compensated_bias(tmp_path: Path) -> None:
    torch.manual_seed(0)
    batches = [(torch.randn(16, 8, generator=torch.Generator().manual_seed(i)), None) for i in range(4)]
    result = prunectl.prune(BiasFlagMLP(), factory_args={"hidden": 16}, example_inputs=batches[0][0][:1],
                            data=batches, rate=0.5, bias_compensation=True, output=tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # the constructor's own default (bias=False), found from its signature, turned on in the rebuild args
    assert manifest["rebuild"]["args"] == {"hidden": 8, "bias": True} and manifest["resize"] == {}
    loaded = prunectl.load(tmp_path / "out")
    assert loaded.fc2.bias is not None and float(loaded.fc2.bias.detach().abs().max()) > 0
    assert result.report["bias_compensation"]["readers"][0]["layer"] == "fc2"
    with pytest.warns(UserWarning, match="'fc2': has no bias, and no argument of .*NoBiasMLP builds it"):
        left = prunectl.prune(NoBiasMLP(), factory_args={"hidden": 16}, example_inputs=batches[0][0][:1],
                              data=batches, rate=0.5, bias_compensation=True)
    assert [entry["layer"] for entry in left.report["bias_compensation"]["uncompensated"]] == ["fc2"]
    assert left.model.fc2.bias is None


def _images(count: int = 4) -> list:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 3, 32, 32, generator=generator), None) for _ in range(count)]


def test_a_bias_free_conv_before_a_batch_norm_shifts_its_running_mean(tmp_path: Path) -> None:
    args = {f"out_ch_conv{i}": 16 for i in range(1, 9)} | {"out_ch_fc1": 32}
    batches = _images()
    errors, inputs = {}, []
    for compensate in (False, True):
        torch.manual_seed(0)
        model = VGG11BN(**args).eval()
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # statistics as trained
            norm.running_mean.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
            norm.running_var.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(2))
        original = VGG11BN(**args).eval()
        original.load_state_dict(model.state_dict())
        result = prunectl.prune(model, factory_args=args, example_inputs=batches[0][0][:1], data=batches, rate=0.5,
                                bias_compensation=compensate)
        with torch.no_grad():
            errors[compensate] = sum(float((result.model(x) - original(x)).pow(2).mean()) for x, _ in batches)
    verify = result.manifest.extra["verify"]
    assert verify["soft_vs_hard_max_abs"] <= verify["tolerance"] * max(1.0, verify["reference_max_abs"])
    assert errors[True] < errors[False] / 4  # measured: 5x closer
    into = {entry["layer"]: entry["into"] for entry in result.report["bias_compensation"]["readers"]}
    assert into["conv3"] == "bn3.running_mean" and into["fc1"] == "fc1.bias"
    handle = original.conv3.register_forward_pre_hook(lambda module, x: inputs.append(x[0].double()))
    with torch.no_grad():
        for x, _ in batches:
            original(x)
    handle.remove()
    mean = torch.cat(inputs).mean((0, 2, 3))
    removed = torch.tensor(sorted(set(range(16)) - set(result.plan["conv3"].inp.tolist())))
    shift = original.conv3.weight.double()[:, removed].sum((2, 3)) @ mean[removed]
    expected = (original.bn3.running_mean.double() - shift)[result.plan["conv3"].out]
    assert torch.allclose(result.model.bn3.running_mean.double(), expected, atol=1e-6)


def test_a_batch_norm_that_reads_an_activation_is_not_shifted() -> None:
    batches = _images(2)
    torch.manual_seed(0)
    model = ActivationBeforeNorm()
    before = model.bn2.running_mean.clone()
    with pytest.warns(UserWarning, match="'conv2': has no bias.*'bn2' after it does not take its output as it is"):
        result = prunectl.prune(model.eval(), factory_args={}, example_inputs=batches[0][0][:1], data=batches,
                                rate=0.5, bias_compensation=True)
    assert [entry["layer"] for entry in result.report["bias_compensation"]["uncompensated"]] == ["conv2"]
    kept = result.plan["bn2"].out
    assert torch.equal(result.model.bn2.running_mean, before[kept])
