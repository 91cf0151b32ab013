"""manifest.json (version 1): how to rebuild a pruned model without pickle, and proof of what was done.

``load_bundle`` is the safe reload: strict manifest, sha256 of every listed file, factory
resolved only to an nn.Module subclass or a registered provider, shapes from ``resize``,
weights from safetensors loaded strictly. Nothing is unpickled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from . import factories
from . import layers as L
from .checkpoint import MANIFEST_NAME, file_sha256, validate_state_dict
from .errors import CheckpointError, PrunectlError, VerificationError
from .integrity import SEAL_KEY, check_seal, sealed_bytes
from .jsonio import read_json
from .materialize import build_with_weights
from .resources import check_fits, meta_model, safetensors_shapes
from .spec import DTYPES
from .surgery import apply_resize

MANIFEST_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
_REQUIRED = ("prunectl_manifest", "rebuild", "resize", "kept", "input", "files", "versions")
_OPTIONAL = ("criterion", "rate", "round_to", "min_channels", "group_reduce", "verify", "onnx", "source",
             "spec_sha256", SEAL_KEY)  # the seal is rewritten by write_manifest (integrity.py)
# recorded by choose.py: how channels were chosen, the target reached, unstructured sparsity, --data
_OPTIONAL += ("selection", "target", "sparsity", "data")
_OPTIONAL += ("module",)  # prune --module: the submodule the input goes to (entry.py)
_FILE_NAMES = ("model.safetensors", "model.pt", "model.onnx", "report.json", "history.json", "history.png")


@dataclass(frozen=True)
class Manifest:
    rebuild: dict[str, Any]
    resize: dict[str, dict[str, int]]
    kept: dict[str, list[int]]
    input: dict[str, Any]
    files: dict[str, str]
    versions: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)  # criterion, rate, verify, onnx, source, ...

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prunectl_manifest": MANIFEST_VERSION, "rebuild": self.rebuild,
                               "resize": self.resize, "kept": self.kept}
        out.update({key: self.extra[key] for key in _OPTIONAL if key in self.extra})
        out.update({"input": self.input, "files": self.files, "versions": self.versions})
        return out

    @classmethod
    def from_json(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        def bad(key: str, problem: str) -> CheckpointError:
            return CheckpointError(f"{source}: {key}: {problem}")

        if not isinstance(data, dict):
            raise bad("(top level)", "expected a JSON object")
        for key in _REQUIRED:
            if key not in data:
                raise bad(key, "missing")
        unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise bad(unknown[0], "unknown key")
        if data["prunectl_manifest"] != MANIFEST_VERSION or isinstance(data["prunectl_manifest"], bool):
            raise bad("prunectl_manifest", f"unsupported version {data['prunectl_manifest']!r}")
        rebuild = data["rebuild"]
        if (not isinstance(rebuild, dict) or set(rebuild) != {"factory", "args"}
                or not isinstance(rebuild["factory"], str) or not isinstance(rebuild["args"], dict)):
            raise bad("rebuild", "expected {\"factory\": \"module:Class\", \"args\": {...}}")
        if not isinstance(data["resize"], dict) or not all(
                isinstance(v, dict) and all(isinstance(n, int) and not isinstance(n, bool) for n in v.values())
                for v in data["resize"].values()):
            raise bad("resize", "expected an object of module -> {attribute: integer}")
        if not isinstance(data["kept"], dict) or not all(
                isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
                for v in data["kept"].values()):
            raise bad("kept", "expected an object of layer -> list of channel indices")
        inp = data["input"]
        if (not isinstance(inp, dict) or not isinstance(inp.get("shape"), list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20 for d in inp["shape"])
                or not 0 < len(inp["shape"]) <= 8 or inp.get("dtype") not in DTYPES):
            raise bad("input", "expected {\"shape\": [positive ints], \"dtype\": \"float32\"}")
        files = data["files"]
        if not isinstance(files, dict) or WEIGHTS_NAME not in files or not all(
                name in _FILE_NAMES and isinstance(digest, str) and len(digest) == 64 for name, digest in files.items()):
            raise bad("files", f"expected sha256 digests of known files ({', '.join(_FILE_NAMES)}), "
                      f"including {WEIGHTS_NAME}")
        if not isinstance(data["versions"], dict):
            raise bad("versions", "expected an object")
        module = data.get("module")
        if module is not None and (not isinstance(module, str) or not all(
                part.isidentifier() or part.isdigit() for part in module.split("."))):
            raise bad("module", f"expected a submodule path such as \"backbone\", got {module!r}")
        verify = data.get("verify", {})
        seed = verify.get("seed", 0) if isinstance(verify, dict) else None
        if not isinstance(seed, int) or isinstance(seed, bool):  # seeds the inputs verify/export replay
            raise bad("verify", "expected an object whose \"seed\" is an integer")
        return cls(rebuild=rebuild, resize=data["resize"], kept=data["kept"], input=inp, files=files,
                   versions=data["versions"], extra={k: data[k] for k in _OPTIONAL if k in data})


def read_manifest(bundle: str | Path) -> Manifest:
    path = Path(bundle) / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(f"{bundle}: not a prunectl bundle (no {MANIFEST_NAME})")
    return Manifest.from_json(read_json(path, CheckpointError), source=str(path))


def write_manifest(manifest: Manifest, bundle: Path) -> None:
    (bundle / MANIFEST_NAME).write_bytes(sealed_bytes(manifest.to_json()))


def check_files(bundle: Path, manifest: Manifest) -> None:
    """Every listed file exists and has its recorded sha256 (a flipped byte is exit 4), and no
    model file sits in the bundle unlisted (whoever ships the directory would trust it)."""
    for name in ("model.safetensors", "model.pt", "model.onnx"):  # the files a consumer would load
        if name not in manifest.files and (bundle / name).exists():
            raise VerificationError(f"{bundle / name}: present but not listed in {MANIFEST_NAME} (added afterwards?)")
    for name, digest in manifest.files.items():
        path = bundle / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in {MANIFEST_NAME} but missing")
        if file_sha256(path) != digest:
            if (bundle / MANIFEST_NAME).is_file():
                check_seal(bundle / MANIFEST_NAME)  # the recorded digest itself may be what changed
            raise VerificationError(f"{path}: sha256 does not match {MANIFEST_NAME} (file modified or corrupted)")


def rebuild_model(manifest: Manifest, source: str = MANIFEST_NAME) -> nn.Module:
    """The module skeleton of a bundle: factory(**args), then ``resize``; weights not loaded."""
    try:
        model = factories.build(manifest.rebuild["factory"], dict(manifest.rebuild["args"]))
        apply_resize(model, manifest.resize, where=f"{source}: resize")
    except PrunectlError as exc:
        raise type(exc)(f"{source}: rebuild: {exc}") from None
    return model


def load_bundle(bundle: str | Path) -> tuple[nn.Module, Manifest]:
    """Rebuild a bundle's model from its manifest and safetensors weights; never unpickles."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    check_files(bundle, manifest)
    weights_path = bundle / WEIGHTS_NAME
    # an edited manifest must not make us allocate a model far larger than its weights
    check_fits(manifest.rebuild["factory"], manifest.rebuild["args"], safetensors_shapes(weights_path),
               weights_path, resize=manifest.resize)
    from safetensors.torch import load_file

    try:
        state_dict = load_file(str(weights_path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file: {exc}") from None
    model = build_with_weights(meta_model(manifest.rebuild["factory"], manifest.rebuild["args"]),
                               validate_state_dict(state_dict, weights_path), weights_path,
                               lambda: rebuild_model(manifest, str(bundle / MANIFEST_NAME)), manifest.resize)
    _check_kept(model, manifest, bundle / MANIFEST_NAME)
    # last, so that an edited manifest reports what is wrong with its content first; a manifest
    # that is still valid but differs from what was written fails here (exit 4)
    check_seal(bundle / MANIFEST_NAME)
    return model.eval(), manifest


def _check_kept(model: nn.Module, manifest: Manifest, source: Path) -> None:
    """``kept`` must describe this model: iterative pruning maps new indices through it."""
    modules = dict(model.named_modules())
    for name, indices in manifest.kept.items():
        if name not in modules or L.kind_of(modules[name]) == "other":
            raise CheckpointError(f"{source}: kept.{name}: no prunable layer of that name in the rebuilt model")
        width = L.out_width(modules[name])
        if len(indices) != width or indices != sorted(set(indices)) or (indices and indices[0] < 0):
            raise CheckpointError(f"{source}: kept.{name}: expected {width} distinct ascending channel indices "
                                  f"(the layer's width), got {len(indices)}")

