"""Fuzzed bundles: edited manifests, tampered or missing files end in a documented exit code.

A bundle comes from elsewhere as often as a checkpoint does. Each case copies a real bundle
(small_mlp with ONNX), damages it, and runs ``verify``, ``export --onnx``, ``info`` and
``prune`` (iterative pruning reads bundles) on it. Integrity cases also check the exit code:
a flipped byte in any file the manifest lists is exit 4 and names the file.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fuzzing import flip_byte, fuzz_settings, invoke, json_get, json_paths
from hypothesis import given
from hypothesis import strategies as st

import prunectl
from fixtures.make_checkpoints import FIXTURES
from prunectl.formats.checksums import file_sha256

SPEC = FIXTURES["small_mlp"][2]
COMMANDS = ("verify", "export", "info", "prune")

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=False),
              st.text(max_size=20), st.sampled_from(["os:system", "builtins:eval", "torch:load", "model.pt",
                                                     "float128", 10 ** 9, -1, 0, "0" * 64])),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.text(max_size=10), children, max_size=3)), max_leaves=8)


@pytest.fixture(scope="module")
def base_bundle(checkpoints, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base") / "bundle"
    prunectl.prune(checkpoints["small_mlp"], prunectl.PruneOptions(spec=SPEC, output=out, onnx=True))
    return out


def _copy(base: Path, tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("bundle") / "b"
    shutil.copytree(base, bundle)
    return bundle


def _run(command: str, bundle: Path, category: str):
    if command == "verify":
        return invoke(["verify", str(bundle), "-q"], category)
    if command == "export":
        return invoke(["export", str(bundle), "--onnx", "-q"], category)
    if command == "info":
        return invoke(["info", str(bundle), "-q"], category)
    out = bundle.parent / "again"
    return invoke(["prune", str(bundle), "--spec", str(SPEC), "-o", str(out), "-q"], category, output=out)


@fuzz_settings(40)
@given(data=st.data(), command=st.sampled_from(COMMANDS), resign=st.booleans())
def test_edited_manifest_gives_documented_exit(base_bundle, tmp_path_factory, data, command, resign):
    """Random edits of manifest.json (values, types, deleted and added keys)."""
    bundle = _copy(base_bundle, tmp_path_factory)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in json_paths(manifest) if p]
        path = data.draw(st.sampled_from(paths))
        parent = json_get(manifest, path[:-1])
        action = data.draw(st.sampled_from(["replace", "delete", "add", "bump"]))
        if action == "replace":
            parent[path[-1]] = data.draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=10))] = data.draw(json_values)
        elif action == "bump" and isinstance(parent[path[-1]], int) and not isinstance(parent[path[-1]], bool):
            parent[path[-1]] += data.draw(st.sampled_from([-1, 1, 10 ** 6, -(10 ** 6), 10 ** 12]))
    text = json.dumps(manifest, allow_nan=True)
    (bundle / "manifest.json").write_text(text)
    if resign:  # an editor who also knows how the manifest protects itself
        from prunectl.formats.seal import seal_manifest_file

        try:
            seal_manifest_file(bundle / "manifest.json")
        except ValueError:  # NaN/Infinity edits are not JSON: nothing to seal, the file stays as edited
            pass
    _run(command, bundle, "bundle-manifest")


def _assert_caught(result, name: str) -> None:
    """A listed file: exit 4 naming it. manifest.json: exit 4 from its seal when it still parses
    and validates, else the validator's 3/5 naming the key; manifest.json named either way."""
    assert name in result.stderr, result.stderr
    assert result.exit_code == 4 or (name == "manifest.json" and result.exit_code in (3, 5)), result.stderr


@fuzz_settings(40)
@given(data=st.data(), command=st.sampled_from(COMMANDS))
def test_tampered_file_is_exit_4_naming_it(base_bundle, tmp_path_factory, data, command):
    """One flipped byte anywhere in any file of the bundle: caught, the file named."""
    bundle = _copy(base_bundle, tmp_path_factory)
    names = sorted(p.name for p in bundle.iterdir())
    name = data.draw(st.sampled_from(names))
    size = (bundle / name).stat().st_size
    flip_byte(bundle / name, data.draw(st.integers(0, size - 1)), data.draw(st.integers(0, 254)))
    result = _run(command, bundle, "bundle-tamper")
    _assert_caught(result, name)


@fuzz_settings(30)
@given(data=st.data(), command=st.sampled_from(COMMANDS))
def test_missing_or_truncated_files(base_bundle, tmp_path_factory, data, command):
    bundle = _copy(base_bundle, tmp_path_factory)
    names = sorted(p.name for p in bundle.iterdir())
    name = data.draw(st.sampled_from(names))
    how = data.draw(st.sampled_from(["delete", "truncate", "empty", "directory"]))
    path = bundle / name
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: data.draw(st.integers(0, path.stat().st_size - 1))])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path.mkdir()
    result = _run(command, bundle, "bundle-missing")
    assert result.exit_code in (4, 5), result.stderr
    assert name in result.stderr


@fuzz_settings(20)
@given(data=st.data())
def test_tampered_weights_with_updated_checksum(base_bundle, tmp_path_factory, data, checkpoints):
    """Whoever edits the weights and fixes the checksum still gets a strict shape/finiteness check."""
    import torch
    from safetensors.torch import load_file, save_file

    bundle = _copy(base_bundle, tmp_path_factory)
    weights = load_file(str(bundle / "model.safetensors"))
    key = data.draw(st.sampled_from(sorted(weights)))
    change = data.draw(st.sampled_from(["nan", "shape", "drop", "extra", "empty"]))
    if change == "nan":
        weights[key] = (weights[key].clone().view(-1).index_fill(0, torch.tensor([0]), float("nan"))
                        .view_as(weights[key]))
    elif change == "shape":
        weights[key] = torch.zeros(data.draw(st.integers(1, 5)), 3)
    elif change == "drop":
        del weights[key]
    elif change == "extra":
        weights["fc9.weight"] = torch.zeros(2)
    else:
        weights[key] = torch.zeros(0)
    save_file(weights, str(bundle / "model.safetensors"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = file_sha256(bundle / "model.safetensors")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    from prunectl.formats.seal import seal_manifest_file

    seal_manifest_file(bundle / "manifest.json")
    result = invoke(["verify", str(bundle), "-q"], "bundle-resigned")
    assert result.exit_code == 5 and "model.safetensors" in result.stderr


def test_unlisted_model_file_is_refused(base_bundle, tmp_path_factory):
    """A model.pt/model.onnx dropped into a bundle without being listed would be trusted by
    whoever ships the directory; verify refuses it."""
    bundle = _copy(base_bundle, tmp_path_factory)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["files"]["model.onnx"]
    manifest.pop("onnx", None)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    from prunectl.formats.seal import seal_manifest_file

    seal_manifest_file(bundle / "manifest.json")
    result = invoke(["verify", str(bundle), "-q"], "bundle-tamper")
    assert result.exit_code == 4 and "model.onnx" in result.stderr


def test_every_file_flip_is_caught(base_bundle, tmp_path_factory):
    """Deterministic companion of the fuzzer: the middle byte of each file, each command."""
    for name in sorted(p.name for p in base_bundle.iterdir()):
        for command in ("verify", "export"):
            bundle = _copy(base_bundle, tmp_path_factory)
            flip_byte(bundle / name, (bundle / name).stat().st_size // 2, 0)
            result = _run(command, bundle, "bundle-tamper")
            _assert_caught(result, name)
