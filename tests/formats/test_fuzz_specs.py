"""Fuzzed specs: every mutation of a valid spec ends in a documented exit code, one line, no traceback.

Mutations start from real fixture specs (small_mlp: plain chain; resnet18: ``prev`` groups;
dwsep: depthwise coupling) and change one or a few things: a value's type, a missing or
extra key, NaN/inf/huge rates, cycles in ``prev``, unicode and very long layer names, deep
nesting, and raw byte damage of the JSON text.
"""
from __future__ import annotations

import json
import math

import pytest
from fuzzing import fuzz_settings, invoke, json_get, json_paths
from hypothesis import given
from hypothesis import strategies as st

from fixtures.make_checkpoints import FIXTURES

BASES = ("small_mlp", "resnet18", "dwsep")

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from([0, 1, -1, 2 ** 63, 10 ** 400, 1e308, 5e-324, "", "l1", "fc1", "os:system"]),
)
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)), max_leaves=10)
weird_rates = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 1.0, -0.0, 0.9999999999,
                               5e-324, 10 ** 400, -1, "0.5", True, None, [0.5], {"rate": 0.5}])
weird_names = st.one_of(
    st.text(min_size=1, max_size=40),
    st.text(alphabet="é中文🙂\u202e\x00\t\n.", min_size=1, max_size=10),
    st.integers(min_value=1001, max_value=20000).map(lambda n: "x" * n),
    st.sampled_from(["", ".", "fc1.", "..", "fc1.weight", "layer1.0", "0", "__class__"]),
)


def _base(name: str) -> dict:
    return json.loads(FIXTURES[name][2].read_text())


def _nest(value, depth: int, as_list: bool):
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


@st.composite
def mutated_specs(draw) -> tuple[str, dict | bytes]:
    base_name = draw(st.sampled_from(BASES))
    spec = _base(base_name)
    layers = list(spec["layers"])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "delete", "add", "rate", "prev", "rename", "nest",
                                     "shape", "factory", "args"]))
        paths = [p for p in json_paths(spec) if p]
        if kind == "replace" and paths:
            path = draw(st.sampled_from(paths))
            json_get(spec, path[:-1])[path[-1]] = draw(json_values)
        elif kind == "delete" and paths:
            path = draw(st.sampled_from(paths))
            parent = json_get(spec, path[:-1])
            if isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, list):
                parent.pop(path[-1])
        elif kind == "add":
            objects = [p for p in json_paths(spec) if isinstance(json_get(spec, p), dict)]
            path = draw(st.sampled_from(objects))
            json_get(spec, path)[draw(st.text(max_size=12))] = draw(json_values)
        elif kind == "rate" and isinstance(spec.get("layers"), dict):
            where = draw(st.sampled_from([None, *spec["layers"]]))
            target = spec if where is None else spec["layers"][where]
            if isinstance(target, dict):
                target["rate"] = draw(weird_rates)
        elif kind == "prev" and isinstance(spec.get("layers"), dict) and layers:
            a, b = draw(st.sampled_from(layers)), draw(st.sampled_from(layers))
            for name, other in ((a, b), (b, a)):  # a <-> b: a two-node cycle (or a self loop)
                if isinstance(spec["layers"].get(name), dict):
                    spec["layers"][name]["prev"] = [other]
        elif kind == "rename" and isinstance(spec.get("layers"), dict) and layers:
            old, new = draw(st.sampled_from(layers)), draw(weird_names)
            spec["layers"] = {(new if k == old else k): v for k, v in spec["layers"].items()}
        elif kind == "nest" and paths:
            path = draw(st.sampled_from(paths))
            depth = draw(st.sampled_from([2, 50, 900, 5000, 100_000]))
            json_get(spec, path[:-1])[path[-1]] = _nest(0.5, depth, draw(st.booleans()))
        elif kind == "shape" and isinstance(spec.get("input"), dict):
            spec["input"]["shape"] = draw(st.one_of(
                st.lists(st.integers(-2, 1 << 21), max_size=10),
                st.lists(st.sampled_from([1 << 20, 65536, 4096]), min_size=2, max_size=8),
                json_values))
        elif kind == "factory" and isinstance(spec.get("model"), dict):
            spec["model"]["factory"] = draw(st.one_of(st.sampled_from(
                ["os:system", "builtins:eval", "subprocess:Popen", "torch:load", "torch.nn:Linear",
                 "fixtures.models:NoSuchNet", "fixtures.models:build", "torchvision:resnet18",
                 "torchvision:nope", ":", "a:b:c", "fixtures.models:MLP.__init__"]), st.text(max_size=30)))
        elif kind == "args" and isinstance(spec.get("model"), dict):
            spec["model"]["args"] = draw(st.dictionaries(
                st.sampled_from(["num_classes", "out_ch_fc1", "out_ch_conv1", "in_features", "weights", "bogus"]),
                json_values, max_size=3))
    encoding = draw(st.sampled_from(["json", "json", "json", "truncated", "bytes"]))
    try:
        text = json.dumps(spec, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError):
        text = b"[" * 100_000
    if encoding == "truncated":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif encoding == "bytes" and text:
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + bytes([draw(st.integers(0, 255))]) + text[at + 1:]
    return base_name, text


@fuzz_settings(60)
@given(case=mutated_specs())
def test_mutated_spec_gives_documented_exit(case, checkpoints, tmp_path_factory):
    base_name, text = case
    work = tmp_path_factory.mktemp("spec")
    spec_path = work / "spec.json"
    spec_path.write_bytes(text)
    out = work / "out"
    result = invoke(["prune", str(checkpoints[base_name]), "--spec", str(spec_path), "-o", str(out), "-q"],
                    "spec", output=out)
    if result.exit_code == 0:
        assert (out / "manifest.json").is_file()


@pytest.mark.parametrize("rate", ["nan", "inf", "-inf", "1e308", "1", "-0.5", "1e-400"])
def test_command_line_rate_out_of_range(rate, checkpoints, tmp_path):
    out = tmp_path / "out"
    result = invoke(["prune", str(checkpoints["small_mlp"]), "--spec", str(FIXTURES["small_mlp"][2]),
                     "--rate", rate, "-o", str(out), "-q"], "spec", output=out, allowed={0, 2, 3})
    if rate not in ("1e-400",):  # 1e-400 parses as 0.0, a valid rate
        assert result.exit_code in (2, 3)


@pytest.mark.parametrize("rate", ["1e400", "-1e400", "1" + "0" * 400, "NaN", "Infinity", "1.0", "-0.1", "\"0.5\"",
                                  "true", "null"])
@pytest.mark.parametrize("where", ["top", "layer"])
def test_spec_rate_edge_values(rate, where, checkpoints, tmp_path):
    """Written as raw JSON text: huge integers (no float can hold them), NaN and Infinity tokens."""
    text = SPEC_TEMPLATE_TOP if where == "top" else SPEC_TEMPLATE_LAYER
    path = tmp_path / "rate.json"
    path.write_text(text.replace("RATE", rate))
    result = invoke(["prune", str(checkpoints["small_mlp"]), "--spec", str(path), "-q"], "spec")
    assert result.exit_code == (0 if rate == "null" else 3), result.stderr


SPEC_TEMPLATE_TOP = ('{"prunectl_spec": 1, "model": {"factory": "fixtures.models:SmallMLP"}, '
                     '"input": {"shape": [1, 64]}, '
                     '"rate": RATE, "layers": {"fc1": {"arg": "out_ch_fc1"}, "fc2": {"arg": "out_ch_fc2"}, '
                     '"fc3": {"arg": null}}}')
SPEC_TEMPLATE_LAYER = SPEC_TEMPLATE_TOP.replace('"rate": RATE, ', "").replace(
    '"fc1": {"arg": "out_ch_fc1"}', '"fc1": {"arg": "out_ch_fc1", "rate": RATE}')


@pytest.mark.parametrize("depth", [1000, 200_000])
def test_deeply_nested_spec_is_a_spec_error(depth, checkpoints, tmp_path):
    spec_path = tmp_path / "deep.json"
    spec_path.write_text("[" * depth + "]" * depth)
    result = invoke(["prune", str(checkpoints["small_mlp"]), "--spec", str(spec_path), "-q"], "spec")
    assert result.exit_code == 3 and "deep.json" in result.stderr


def test_two_layer_prev_cycle_is_named(checkpoints, tmp_path):
    spec = _base("resnet18")
    spec["layers"]["bn1"]["prev"] = ["layer1.0.bn2"]
    spec["layers"]["layer1.0.bn2"]["prev"] = ["bn1"]
    path = tmp_path / "cycle.json"
    path.write_text(json.dumps(spec))
    result = invoke(["prune", str(checkpoints["resnet18"]), "--spec", str(path), "-q"], "spec")
    assert result.exit_code == 3 and "prev" in result.stderr and "cycle.json" in result.stderr


def test_very_long_unicode_layer_name_is_named_briefly(checkpoints, tmp_path):
    spec = _base("small_mlp")
    spec["layers"] = {"中" * 5000: {"arg": "out_ch_fc1"}, **spec["layers"]}
    path = tmp_path / "long.json"
    path.write_text(json.dumps(spec, ensure_ascii=False))
    result = invoke(["prune", str(checkpoints["small_mlp"]), "--spec", str(path), "-q"], "spec")
    assert result.exit_code == 3
