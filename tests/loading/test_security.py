"""No code execution from files, and no paths of the user's machine in what prunectl writes.

- A checkpoint whose unpickling would create a file is refused (exit 5) and the file is never
  created, unless ``--trust-pickle`` (which the last test uses to prove the payload is real).
- A factory from a spec or a manifest that is not an nn.Module subclass or a registered
  provider (``os:system``, ``builtins:eval``, any standard-library module) is refused before
  anything is called, and standard-library modules are not even imported.
- Bundle files (ONNX included) hold no absolute path of the machine that made them (the dynamo
  exporter's own stripping: tests/exporters/test_onnx.py).
"""
from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch
from fuzzing import invoke
from helpers import machine_paths

import prunectl
from fixtures.make_checkpoints import FIXTURES
from prunectl.formats.checksums import file_sha256
from prunectl.formats.seal import seal_manifest_file

SPEC = FIXTURES["small_mlp"][2]


class CreatesFile:
    """Unpickling this calls open(path, "w"): the file appearing is the proof that code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _payloads(marker: Path, tmp_path: Path) -> dict[str, Path]:
    """The same payload in every container prunectl might be handed."""
    state = {"fc1.weight": torch.zeros(2, 2)}
    files = {}
    for name, obj, legacy in (("whole", CreatesFile(marker), False),
                              ("in_state_dict", {**state, "fc1.bias": CreatesFile(marker)}, False),
                              ("in_model_entry", {"state_dict": state, "model": CreatesFile(marker)}, False),
                              ("legacy_format", CreatesFile(marker), True)):
        path = tmp_path / f"{name}.pt"
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        files[name] = path
    raw = tmp_path / "raw_pickle.pt"
    raw.write_bytes(pickle.dumps(CreatesFile(marker)))
    files["raw_pickle"] = raw
    return files


@pytest.mark.parametrize("container", ["whole", "in_state_dict", "in_model_entry", "legacy_format", "raw_pickle"])
@pytest.mark.parametrize("command", ["prune", "info"])
def test_malicious_pickle_is_refused_without_running(container, command, tmp_path):
    marker = tmp_path / "pwned"
    path = _payloads(marker, tmp_path)[container]
    out = tmp_path / "out"
    args = [command, str(path), "--spec", str(SPEC), "-q"] + (["-o", str(out)] if command == "prune" else [])
    result = invoke(args, "security", output=out)
    assert result.exit_code == 5, result.stderr
    assert path.name in result.stderr
    assert not marker.exists(), "unpickling ran code from the checkpoint"
    if container != "raw_pickle":  # a bare pickle is not a torch file at all: nothing to trust
        assert "--trust-pickle" in result.stderr


def test_trust_pickle_really_runs_the_payload(tmp_path):
    """The control experiment: with --trust-pickle the same file does create the marker."""
    marker = tmp_path / "pwned"
    path = _payloads(marker, tmp_path)["whole"]
    result = invoke(["prune", str(path), "--spec", str(SPEC), "--trust-pickle", "-q"], "security")
    assert marker.exists()
    assert result.exit_code == 5  # an open file is not a model either


@pytest.fixture(scope="module")
def bundle(checkpoints, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sec") / "bundle"
    prunectl.prune(checkpoints["small_mlp"], prunectl.PruneOptions(spec=SPEC, output=out))
    return out


def _with_manifest(bundle: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    seal_manifest_file(copy / "manifest.json")  # a careful attacker re-seals
    return copy


REFUSED_FACTORIES = ["os:system", "builtins:eval", "builtins:exec", "subprocess:Popen", "posix:system",
                     "idlelib.idle:main", "antigravity:geohash", "pickle:loads", "torch:load",
                     "collections:OrderedDict", "torch.nn.functional:relu", "fixtures.make_checkpoints:make_all",
                     "fixtures.models:MLP.__init__", "fixtures.models:MLP.__class__", "torch.nn:Module.__subclasses__"]


@pytest.mark.parametrize("factory", REFUSED_FACTORIES)
@pytest.mark.parametrize("command", ["verify", "prune"])
def test_manifest_factory_must_be_a_module_class(factory, command, bundle, tmp_path):
    def edit(manifest):
        manifest["rebuild"]["factory"] = factory
        manifest["rebuild"]["args"] = {"command": f"touch {tmp_path / 'pwned'}"}

    copy = _with_manifest(bundle, tmp_path, edit)
    before = set(sys.modules)
    args = ["verify", str(copy), "-q"] if command == "verify" else \
        ["prune", str(copy), "--spec", str(SPEC), "-q"]
    result = invoke(args, "security")
    assert result.exit_code == 3 and factory in result.stderr, result.stderr
    assert not (tmp_path / "pwned").exists()
    top = factory.split(":")[0].split(".")[0]
    if top in sys.stdlib_module_names and top not in before:
        assert top not in sys.modules, f"{top} was imported before being refused"


@pytest.mark.parametrize("factory", ["os:system", "builtins:eval", "shutil:rmtree", "torch:load"])
def test_spec_factory_must_be_a_module_class(factory, checkpoints, tmp_path):
    spec = json.loads(SPEC.read_text())
    spec["model"] = {"factory": factory, "args": {}}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    result = invoke(["prune", str(checkpoints["small_mlp"]), "--spec", str(path), "-q"], "security")
    assert result.exit_code == 3 and factory in result.stderr


def test_bundle_model_pt_is_never_unpickled(bundle, tmp_path):
    """load/verify read model.safetensors only; a booby-trapped model.pt (checksum updated,
    manifest re-sealed) is never opened, so the payload never runs."""
    marker = tmp_path / "pwned"

    def edit(manifest):
        torch.save(CreatesFile(marker), tmp_path / "evil.pt")
        manifest["files"]["model.pt"] = file_sha256(tmp_path / "evil.pt")

    copy = _with_manifest(bundle, tmp_path, edit)
    shutil.copy(tmp_path / "evil.pt", copy / "model.pt")
    invoke(["verify", str(copy), "-q"], "security")
    prunectl.load(copy)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["small_mlp", "dwsep", "conv1d"])  # linear, conv2d (depthwise), conv1d
def test_bundle_files_hold_nomachine_paths(name, checkpoints, tmp_path):
    out = tmp_path / "deep" / "dir" / "bundle"
    out.parent.mkdir(parents=True)
    invoke(["prune", str(checkpoints[name]), "--spec", str(FIXTURES[name][2]), "-o", str(out), "--onnx", "-q"],
           "security", allowed={0})
    for path in sorted(out.iterdir()):
        data = path.read_bytes()
        for needle in machine_paths(tmp_path):
            assert needle not in data, f"{path.name} contains {needle!r}"
