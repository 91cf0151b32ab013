"""The spec format: round trips, CAC model_info, and one test per invalid case."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SPECS

from prunectl.errors import SpecError
from prunectl.formats.spec import Spec, read_spec, write_spec

VALID = sorted(p for p in SPECS.glob("*.json"))

# file -> fragment the one-line message must contain (besides the file name)
PARSE_ERRORS = {
    "unknown_top_key.json": "ratee: unknown key",
    "unknown_layer_key.json": "layers.conv1.argg: unknown key",
    "rate_wrong_type.json": "rate: expected a number in [0, 1), got 'half'",
    "rate_one.json": "rate: expected a number in [0, 1), got 1.0",
    "rate_negative.json": "rate: expected a number in [0, 1), got -0.1",
    "prev_unlisted.json": "names 'pool1', which is not listed in layers",
    "prev_later_layer.json": "names 'conv3', which is listed after 'conv2'",
    "version_2.json": "unsupported version 2",
    "layers_not_object.json": "layers: expected an object of layer name -> options, got a list",
    "not_json.json": "not valid JSON",
    "round_to_zero.json": "round_to: expected an integer >= 1, got 0",
    "module_not_a_path.json": "module: expected a submodule path such as \"backbone\" or \"features.0\", "
                              "got 'features/0'",
}


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_round_trip(path: Path, tmp_path: Path) -> None:
    spec = read_spec(path)
    again = Spec.from_json(spec.to_json(), source="again")
    assert again.to_json() == spec.to_json()
    write_spec(spec, tmp_path / "out.json")
    assert read_spec(tmp_path / "out.json").to_json() == spec.to_json()


def test_module_round_trips_and_under_prefixes_every_name() -> None:
    spec = read_spec(VALID[0])
    scoped = spec.under("backbone.body")
    assert scoped.module == "backbone.body"
    assert all(layer.name.startswith("backbone.body.") for layer in scoped.layers)
    assert all(name.startswith("backbone.body.") for layer in scoped.layers for name in layer.prev or ())
    assert all(name.startswith("backbone.body.")
               for layer in scoped.layers for part in layer.cat or () for name in part)
    again = Spec.from_json(scoped.to_json(), source="again")
    assert again.module == "backbone.body" and again.to_json() == scoped.to_json()


def test_round_trip_preserves_file_content() -> None:
    raw = json.loads((SPECS / "resnet18.json").read_text())
    assert read_spec(SPECS / "resnet18.json").to_json() == raw


def test_bare_cac_model_info_is_layers_with_defaults() -> None:
    spec = read_spec(SPECS / "cac_alexnet_model_info.json")
    assert spec.model is None and spec.rate is None
    assert spec.layer_names[0] == "conv1"
    fc3 = spec.layer("fc3")
    assert fc3.has_arg and fc3.arg is None and not fc3.prunable


def test_layer_without_arg_key_differs_from_null_arg() -> None:
    spec = read_spec(SPECS / "dwsep.json")
    assert not spec.layer("dw1").has_arg and spec.layer("dw1").prunable
    assert spec.layer("fc").has_arg and not spec.layer("fc").prunable


@pytest.mark.parametrize("name", sorted(PARSE_ERRORS))
def test_invalid_spec_message_names_file_and_key(name: str) -> None:
    path = SPECS / "invalid" / name
    with pytest.raises(SpecError) as info:
        read_spec(path)
    message = str(info.value)
    assert PARSE_ERRORS[name] in message
    assert str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize("text, fragment", [
    ('{"prunectl_spec": 1, "layers": {"a": {}}, "rate": NaN}', "NaN is not valid JSON"),
    ('{"prunectl_spec": 1, "layers": {"a": {}, "a": {}}}', "duplicate key 'a'"),
    ('{"prunectl_spec": 1, "layers": {}}', "layers: is empty"),
    ('{"prunectl_spec": 1, "layers": {"a": {"prev": ["a"]}}}', "names the layer itself"),
    ('{"prunectl_spec": 1, "layers": {"a": {"prune": "no"}}}', "layers.a.prune: expected true or false"),
    ('{"prunectl_spec": 1, "layers": {"a": {"arg": "not an identifier"}}}', "layers.a.arg"),
    ('{"prunectl_spec": 1, "layers": {"a": {}}, "input": {"shape": [1, 0]}}', "input.shape"),
    ('{"prunectl_spec": 1, "layers": {"a": {}}, "model": {"factory": "nocolon"}}', "model.factory"),
    ('{"prunectl_spec": true, "layers": {"a": {}}}', "unsupported version True"),
    ('{"layers": {"a": {}}, "rate": 0.5}', "prunectl_spec: missing"),
    ('[1, 2]', "expected a JSON object, got a list"),
    ('{"prunectl_spec": 1, "layers": {"a": {}}, "group_reduce": "median"}', "group_reduce: expected one of"),
    ('{"prunectl_spec": 1, "layers": {"a": {"heads": 2, "head_dim": [32]}}}', "layers.a.head_dim: expected a positive"),
    ('{"prunectl_spec": 1, "layers": {"a": {"heads": 2, "head_dim": [32, 0]}}}', "layers.a.head_dim"),
    ('{"prunectl_spec": 1, "layers": {"a": {"parts": 1}}}', "layers.a.parts: expected 2 or more"),
    ('{"prunectl_spec": 1, "layers": {"a": {"parts": 2, "heads": 2, "head_dim": 8}}}', "layers.a.parts"),
])
def test_invalid_inline_specs(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "spec.json"
    path.write_text(text)
    with pytest.raises(SpecError, match=None) as info:
        read_spec(path)
    assert fragment in str(info.value)


def test_with_options_overrides_only_given_values() -> None:
    spec = read_spec(SPECS / "alexnet.json")
    overridden = spec.with_options(rate=0.25, round_to=None)
    assert overridden.rate == 0.25 and overridden.round_to == spec.round_to


def test_missing_spec_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        read_spec(tmp_path / "nope.json")


def test_parts_of_different_head_widths_and_equal_parts_round_trip() -> None:
    data = {"prunectl_spec": 1, "layers": {"qkv": {"heads": 2, "head_dim": [32, 16, 16]}, "o": {"prev": ["qkv"]},
                                           "gate_up": {"parts": 2}, "down": {}}}
    spec = Spec.from_json(data)
    assert spec.layer("qkv").head_dim == (32, 16, 16) and spec.layer("gate_up").parts == 2
    assert spec.to_json() == data and Spec.from_json(spec.to_json()) == spec
