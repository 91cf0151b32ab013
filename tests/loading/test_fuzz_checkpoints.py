"""Fuzzed checkpoints: damaged files and odd state_dicts end in a documented exit code, never a traceback.

Each case writes a mutated version of the small_mlp checkpoint (``.pt`` zip, legacy ``.pt``,
``.safetensors``, or the ``{"state_dict", "model"}`` form) and runs ``prune`` and ``info`` on it.
Mutations: truncation, flipped bytes, missing/extra/renamed keys, wrong shapes, NaN/inf
weights, empty tensors, other dtypes, non-tensor values, and zero-channel layers.
"""
from __future__ import annotations

import io
import json

import pytest
import torch
from fuzzing import fuzz_settings, invoke
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from fixtures.make_checkpoints import FIXTURES, make_model

SPEC = FIXTURES["small_mlp"][2]
FACTORY, ARGS = FIXTURES["small_mlp"][0], FIXTURES["small_mlp"][1]
DTYPES = [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.bool, torch.complex64,
          torch.uint8]
NON_TENSORS = [None, 0, 1.5, "weights", b"\x00", [1.0, 2.0], {"nested": torch.zeros(2)}, (torch.zeros(1),),
               float("nan"), torch.Size([2, 3])]


@st.composite
def mutated_state_dicts(draw) -> dict:
    state = {key: value.clone() for key, value in make_model("small_mlp").state_dict().items()}
    for _ in range(draw(st.integers(1, 3))):
        keys = list(state)
        kind = draw(st.sampled_from(["drop", "extra", "rename", "shape", "nonfinite", "empty", "dtype",
                                     "non_tensor", "scale", "prefix"]))
        tensors = [k for k in keys if isinstance(state[k], torch.Tensor)]
        key = draw(st.sampled_from(tensors)) if tensors else None
        if kind == "drop" and key:
            del state[key]
        elif kind == "extra":
            state[draw(st.sampled_from(["fc4.weight", "fc1.weight_orig", "", "module.fc1.weight", "é"]))] = \
                torch.randn(draw(st.integers(0, 4)), 3)
        elif kind == "rename" and key:
            state[draw(st.text(max_size=12))] = state.pop(key)
        elif kind == "shape" and key:
            state[key] = torch.randn(tuple(draw(st.lists(st.integers(0, 70), max_size=3))))
        elif kind == "nonfinite" and key and state[key].is_floating_point() and state[key].numel():
            flat = state[key].view(-1)
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from([float("nan"), float("inf"),
                                                                                 -float("inf")]))
        elif kind == "empty" and key:
            state[key] = torch.empty(0) if draw(st.booleans()) or not state[key].dim() else state[key][:0]
        elif kind == "dtype" and key:
            dtype = draw(st.sampled_from(DTYPES))
            state[key] = state[key].to(dtype) if dtype is not torch.complex64 else state[key].to(dtype) * 1j
        elif kind == "non_tensor" and key:
            state[key] = draw(st.sampled_from(NON_TENSORS))
        elif kind == "scale" and key and state[key].is_floating_point():
            state[key] = state[key] * draw(st.sampled_from([0.0, 1e-45, 1e30, 3.4e38, -1e38]))
        elif kind == "prefix":
            state = {f"module.{k}": v for k, v in state.items()}
    return state


def _write(state: dict, form: str, directory) -> str:
    if form == "safetensors":
        path = directory / "ckpt.safetensors"
        try:
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        except Exception:  # safetensors can't hold it: write what a broken writer might leave
            path.write_bytes(json.dumps({k: str(v)[:50] for k, v in state.items()}).encode())
        return str(path)
    path = directory / "ckpt.pt"
    obj = {"state_dict": state, "model": {"factory": FACTORY, "args": dict(ARGS)}} if form == "full" else state
    torch.save(obj, path, _use_new_zipfile_serialization=form != "legacy")
    return str(path)


@fuzz_settings(40)
@given(state=mutated_state_dicts(), form=st.sampled_from(["zip", "legacy", "safetensors", "full"]))
def test_mutated_state_dict_gives_documented_exit(state, form, tmp_path_factory):
    work = tmp_path_factory.mktemp("ckpt")
    path = _write(state, form, work)
    out = work / "out"
    invoke(["prune", path, "--spec", str(SPEC), "-o", str(out), "-q"], "checkpoint", output=out)
    invoke(["info", path, "--spec", str(SPEC), "-q"], "checkpoint")


@fuzz_settings(40)
@given(form=st.sampled_from(["zip", "legacy", "safetensors", "full"]), data=st.data())
def test_damaged_checkpoint_file_gives_documented_exit(form, data, tmp_path_factory):
    work = tmp_path_factory.mktemp("damaged")
    path = work / ("ckpt.safetensors" if form == "safetensors" else "ckpt.pt")
    _write(make_model("small_mlp").state_dict(), form, work)
    raw = bytearray(path.read_bytes())
    damage = data.draw(st.sampled_from(["truncate", "flip", "splice", "header"]))
    if damage == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif damage == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    elif damage == "splice":
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    else:  # the first bytes decide the format: damage those
        for i in range(data.draw(st.integers(1, 16))):
            raw[i] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(raw))
    out = work / "out"
    invoke(["prune", str(path), "--spec", str(SPEC), "-o", str(out), "-q"], "checkpoint", output=out)


@pytest.mark.parametrize("obj", [[1, 2], torch.zeros(3), "text", 42, None, {"state_dict": [1]},
                                 {"state_dict": {}, "model": None}, {"state_dict": {"a": torch.zeros(1)}, "x": 1},
                                 {"state_dict": {"fc1.weight": torch.zeros(1)}, "model": {"factory": 5}},
                                 {"state_dict": {"fc1.weight": torch.zeros(1)}, "model": {"factory": "os:system"}},
                                 {1: torch.zeros(1)}, {}],
                         ids=lambda o: type(o).__name__)
def test_non_state_dict_objects(obj, tmp_path):
    path = tmp_path / "odd.pt"
    torch.save(obj, path)
    out = tmp_path / "out"
    result = invoke(["prune", str(path), "--spec", str(SPEC), "-o", str(out), "-q"], "checkpoint", output=out)
    assert result.exit_code in (3, 5) and "odd.pt" in result.stderr


def _zero_channel_spec(tmp_path) -> str:
    spec = json.loads(SPEC.read_text())
    spec["model"]["args"]["out_ch_fc1"] = 0
    path = tmp_path / "zero.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_zero_channel_layer(tmp_path):
    """A checkpoint whose fc1 has no output channels (a consistent, if useless, model)."""
    torch.manual_seed(0)
    model = make_model("small_mlp").__class__(**{**ARGS, "out_ch_fc1": 0})
    path = tmp_path / "zero.pt"
    torch.save(model.state_dict(), path)
    out = tmp_path / "out"
    result = invoke(["prune", str(path), "--spec", _zero_channel_spec(tmp_path), "-o", str(out), "-q"],
                    "checkpoint", output=out)
    assert result.exit_code in (3, 6) and "fc1" in result.stderr


def test_huge_args_do_not_allocate(tmp_path):
    """Args from a file asking for 10**9 channels are refused from shapes alone (meta device)."""
    spec = json.loads(SPEC.read_text())
    spec["model"]["args"]["out_ch_fc1"] = 10 ** 9
    spec_path = tmp_path / "huge.json"
    spec_path.write_text(json.dumps(spec))
    path = tmp_path / "small.pt"
    torch.save(make_model("small_mlp").state_dict(), path)
    result = invoke(["prune", str(path), "--spec", str(spec_path), "-q"], "checkpoint")
    assert result.exit_code == 5 and "fc1.weight" in result.stderr


def test_truncated_at_every_tenth(tmp_path):
    """Deterministic companion of the fuzzer: the .pt cut at 10%, 20%, ... of its length."""
    full = io.BytesIO()
    torch.save(make_model("small_mlp").state_dict(), full)
    data = full.getvalue()
    for tenth in range(10):
        path = tmp_path / f"cut{tenth}.pt"
        path.write_bytes(data[: len(data) * tenth // 10])
        result = invoke(["prune", str(path), "--spec", str(SPEC), "-q"], "checkpoint")
        assert result.exit_code == 5 and f"cut{tenth}.pt" in result.stderr
