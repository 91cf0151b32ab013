"""Writing a bundle (prunectl.bundle.writer) and the atomic directory it is written in
(prunectl.bundle.staging): the files, their sha256 in a sealed manifest, and the output path
holding either the complete new bundle, the previous one, or nothing."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from fixtures.make_checkpoints import make_model
from prunectl.bundle.staging import staged_directory
from prunectl.bundle.writer import versions, write_bundle
from prunectl.errors import SpecError, VerificationError
from prunectl.formats.manifest import Manifest
from prunectl.formats.seal import SEAL_KEY, check_seal, sealed_bytes
from prunectl.formats.strict_json import dump_json, parse_json
from prunectl.loading.bundle import load_bundle

FACTORY = "fixtures.models:SmallMLP"
REPORT = {"params": {"before": 6922, "after": 6922, "ratio": 1.0}, "layers": [{"name": "fc1", "after": 64}]}
HISTORY = dump_json({"steps": [{"step": 1, "accuracy": 0.5}]})


def _manifest() -> Manifest:
    return Manifest(rebuild={"factory": FACTORY, "args": {"num_classes": 10}}, resize={}, kept={},
                    input={"shape": [1, 64], "dtype": "float32"}, files={}, versions=versions(),
                    extra={"criterion": "l1", "verify": {"seed": 0}})


def _inputs() -> list[torch.Tensor]:
    return [torch.randn(1, 64, generator=torch.Generator().manual_seed(0))]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _siblings(out: Path) -> list[str]:
    """Staging leftovers beside the output path."""
    return sorted(p.name for p in out.parent.glob(f".{out.name}.tmp-*"))


def _canonical(out: Path) -> bytes:
    """The manifest re-rendered canonically from its own content: what the writer must have written."""
    return sealed_bytes(parse_json((out / "manifest.json").read_bytes()))


@pytest.fixture
def model() -> torch.nn.Module:
    return make_model("small_mlp")


def test_write_bundle_writes_the_files_and_a_sealed_manifest_of_their_sha256(model, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    written = write_bundle(out, model, _manifest(), REPORT, _inputs(), None, extra_files={"history.json": HISTORY})
    names = ["history.json", "model.pt", "model.safetensors", "report.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "manifest.json"])
    assert written.files == {name: _sha256(out / name) for name in names}
    assert (out / "report.json").read_bytes() == dump_json(REPORT)
    assert (out / "history.json").read_bytes() == HISTORY
    raw = parse_json((out / "manifest.json").read_bytes())
    assert raw["files"] == written.files and list(raw)[-1] == SEAL_KEY
    assert raw["rebuild"] == {"factory": FACTORY, "args": {"num_classes": 10}} and raw["criterion"] == "l1"
    assert (out / "manifest.json").read_bytes() == _canonical(out)  # canonical form on disk
    assert check_seal(out / "manifest.json") is True
    assert _siblings(out) == []


def test_the_weights_files_hold_the_model(model, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    write_bundle(out, model, _manifest(), REPORT, _inputs(), None)
    from safetensors.torch import load_file

    for state in (load_file(str(out / "model.safetensors")), torch.load(out / "model.pt", weights_only=True)):
        assert state.keys() == model.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_load_bundle_reads_it_back(model, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    written = write_bundle(out, model, _manifest(), REPORT, _inputs(), None, extra_files={"history.json": HISTORY})
    rebuilt, manifest = load_bundle(out)
    assert manifest.files == written.files and manifest.rebuild == written.rebuild
    assert manifest.input == {"shape": [1, 64], "dtype": "float32"} and manifest.extra["criterion"] == "l1"
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in model.state_dict().items())
    x = _inputs()[0]
    with torch.no_grad():  # equal weights; the loaded tensors' alignment may change BLAS's rounding
        assert torch.allclose(rebuilt(x), model(x), rtol=0, atol=1e-6)


def test_a_changed_manifest_byte_breaks_the_seal(model, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    write_bundle(out, model, _manifest(), REPORT, _inputs(), None)
    path = out / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"criterion": "l1"', b'"criterion": "l2"'))
    with pytest.raises(VerificationError, match="does not match its manifest_sha256"):
        check_seal(path)


def test_onnx_is_exported_checked_and_listed(model, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    written = write_bundle(out, model, _manifest(), REPORT, _inputs(), 18)
    assert written.files["model.onnx"] == _sha256(out / "model.onnx")
    onnx = written.extra["onnx"]
    assert onnx["opset"] == 18 and onnx["max_abs"] <= onnx["atol"]
    assert json.loads((out / "manifest.json").read_text())["onnx"] == onnx
    assert check_seal(out / "manifest.json") is True


def test_a_failing_block_leaves_nothing_at_the_output_path(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError, match="boom"):
        with staged_directory(out) as staging:
            assert staging.parent == tmp_path and staging != out
            (staging / "manifest.json").write_text("{}")
            raise RuntimeError("boom")
    assert not out.exists()
    assert _siblings(out) == [] and list(tmp_path.iterdir()) == []


def test_missing_parents_are_made_and_removed_again_when_the_block_fails(tmp_path: Path) -> None:
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "made" / "for" / "bundle"
    with pytest.raises(RuntimeError, match="boom"):
        with staged_directory(out) as staging:
            assert staging.parent == out.parent  # mkdir -p before staging
            raise RuntimeError("boom")
    assert list((tmp_path / "kept").iterdir()) == []  # only what it made is gone
    with staged_directory(out) as staging:
        (staging / "manifest.json").write_text("{}")
    assert (out / "manifest.json").read_text() == "{}"


def test_a_failing_write_keeps_the_previous_bundle(model, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    write_bundle(out, model, _manifest(), REPORT, _inputs(), None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(out) as staging:
            (staging / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _siblings(out) == []


def test_an_existing_bundle_is_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    (out / "model.onnx").write_text("old")  # not in the new bundle: must not survive the swap
    with staged_directory(out) as staging:
        (staging / "manifest.json").write_text("new")
        (staging / "model.safetensors").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors"]
    assert (out / "manifest.json").read_text() == "new"
    assert _siblings(out) == []


def test_a_non_empty_directory_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    entered = []
    with pytest.raises(SpecError, match="is a non-empty directory that is not a prunectl bundle"):
        with staged_directory(out):
            entered.append(True)
    assert entered == [] and [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me" and _siblings(out) == []


def test_a_file_at_the_output_path_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.write_text("keep me")
    with pytest.raises(SpecError, match="exists and is not a directory"):
        with staged_directory(out):
            pass
    assert out.read_text() == "keep me"


def test_an_empty_directory_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    with staged_directory(out) as staging:
        (staging / "manifest.json").write_text("new")
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
