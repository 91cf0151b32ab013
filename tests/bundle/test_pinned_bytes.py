"""One fixture bundle's bytes, pinned: the ``mlp`` fixture pruned with its spec and default options.

Bundles are byte-deterministic (tests/test_determinism.py), so a refactoring that changes no
behaviour leaves these digests as they are. A change to these bytes must be deliberate and
explained in docs/decisions.md (what changed in the bundle and why), and the constants below
updated in the same commit.

Pinned: model.safetensors, report.json, and the manifest's canonical JSON
(``formats.strict_json.dump_json``) without ``versions`` (installed library releases), without
``manifest_sha256`` (a digest of the rest, versions included) and without the proof's two measured
float64 numbers (``verify.soft_vs_hard_max_abs``, ``verify.reference_max_abs``): float64 sums
round by the CPU's kernels (Intel and AMD EPYC machines differ in the last bits), so they are
checked against the bound instead. model.pt is left out: its
bytes are torch.save's zip archive, whose records follow the installed torch release; its
content is checked equal to model.safetensors elsewhere (tests/test_pipeline.py).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import prunectl
from fixtures.make_checkpoints import FIXTURES
from prunectl.formats.seal import SEAL_KEY
from prunectl.formats.strict_json import dump_json, parse_json

SAFETENSORS_SHA256 = "a523e2c27eda8c125cb25bcc57f288161f135ab9b92a9eec92555c0799378cd0"
REPORT_SHA256 = "b53b625714c82206482ac4820870d9d2c17c710c8e3153471ae1f552ec8f5179"
MANIFEST_WITHOUT_VERSIONS_SHA256 = "a694242028065c211d59b3ea03eef926208920e85b993de29c64eb715507cb04"


@pytest.fixture(scope="module")
def bundle(checkpoints, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pinned") / "bundle"
    prunectl.prune(checkpoints["mlp"], prunectl.PruneOptions(spec=FIXTURES["mlp"][2], output=out))
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_bundle_holds_the_default_files(bundle: Path) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.pt", "model.safetensors",
                                                        "report.json"]


def test_weights_bytes_are_pinned(bundle: Path) -> None:
    assert _sha256((bundle / "model.safetensors").read_bytes()) == SAFETENSORS_SHA256


def test_report_bytes_are_pinned(bundle: Path) -> None:
    assert _sha256((bundle / "report.json").read_bytes()) == REPORT_SHA256


def test_manifest_without_versions_is_pinned(bundle: Path) -> None:
    manifest = parse_json((bundle / "manifest.json").read_bytes())
    assert set(manifest["versions"]) == {"prunectl", "torch", "onnx", "onnxruntime", "safetensors"}
    del manifest["versions"], manifest[SEAL_KEY]
    verify = manifest["verify"]
    measured, reference = verify.pop("soft_vs_hard_max_abs"), verify.pop("reference_max_abs")
    assert 0 <= measured <= verify["tolerance"] * max(1.0, reference) and 0 < reference < 10
    assert manifest["files"]["model.safetensors"] == SAFETENSORS_SHA256  # the pinned files, as listed
    assert manifest["files"]["report.json"] == REPORT_SHA256
    assert _sha256(dump_json(manifest)) == MANIFEST_WITHOUT_VERSIONS_SHA256
