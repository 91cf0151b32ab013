"""The manifest: strict round trip and the safe reload path."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import SPECS

import prunectl
from prunectl.errors import CheckpointError, SpecError
from prunectl.formats.manifest import Manifest, read_manifest
from prunectl.formats.strict_json import parse_json


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, checkpoints) -> Path:
    out = tmp_path_factory.mktemp("m") / "bundle"
    prunectl.prune(checkpoints["dwsep"], prunectl.PruneOptions(spec=SPECS / "dwsep.json", output=out))
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_round_trip(bundle: Path) -> None:
    raw = parse_json((bundle / "manifest.json").read_bytes())
    assert Manifest.from_json(raw).to_json() == raw
    assert list(raw)[:4] == ["prunectl_manifest", "rebuild", "resize", "kept"]
    for key in ("criterion", "rate", "round_to", "input", "verify", "source", "spec_sha256", "files", "versions"):
        assert key in raw


def _edit(bundle: Path, tmp_path: Path, change) -> Path:
    copy = _copy(bundle, tmp_path)
    data = json.loads((copy / "manifest.json").read_text())
    change(data)
    (copy / "manifest.json").write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize("change, error, fragment", [
    (lambda m: m.update(extra=1), CheckpointError, "extra: unknown key"),
    (lambda m: m.pop("files"), CheckpointError, "files: missing"),
    (lambda m: m.update(prunectl_manifest=2), CheckpointError, "unsupported version 2"),
    (lambda m: m["rebuild"].update(factory="os:system"), SpecError, "refused"),
    (lambda m: m["rebuild"].update(factory="builtins:exec"), SpecError, "refused"),
    (lambda m: m["rebuild"].update(factory="collections:OrderedDict"), SpecError, "not an nn.Module subclass"),
    (lambda m: m["resize"].update({"nope": {"out_channels": 3}}), SpecError, "resize.nope"),
    (lambda m: m["resize"].update({"conv1": {"out_channels": 5}}), CheckpointError, "shape mismatch"),
    (lambda m: m["files"].update({"../../etc/passwd": "0" * 64}), CheckpointError, "files"),
    (lambda m: m["rebuild"]["args"].update(out_ch_pw1=3), CheckpointError, "does not fit the model"),
])
def test_edited_manifest_is_refused(bundle: Path, tmp_path: Path, change, error, fragment: str) -> None:
    copy = _edit(bundle, tmp_path, change)
    with pytest.raises(error) as info:
        prunectl.load(copy)
    assert fragment in str(info.value)


def test_missing_file_is_a_bad_bundle(bundle: Path, tmp_path: Path) -> None:
    copy = _copy(bundle, tmp_path)
    (copy / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="model.pt: listed in manifest.json but missing"):
        prunectl.load(copy)


def test_load_never_unpickles(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", refuse)
    model = prunectl.load(bundle)
    assert read_manifest(bundle).rebuild["args"]["out_ch_pw1"] == model.pw1.out_channels
