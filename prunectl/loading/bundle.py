"""Reading a bundle back: the safe reload behind ``prunectl.load``, ``verify`` and re-pruning.

Strict manifest, sha256 of every listed file (and the manifest's own seal), factory resolved
only to an nn.Module subclass or a registered provider, shapes from ``resize``, weights from
safetensors loaded strictly. Nothing is unpickled.
"""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ..errors import CheckpointError, PrunectlError, VerificationError
from ..formats.checksums import file_sha256
from ..formats.manifest import HF_DIR, MANIFEST_NAME, WEIGHTS_NAME, Manifest, read_manifest
from ..formats.seal import check_seal
from ..layers import kinds as L
from ..layers.resize import apply_resize
from ..models import factory
from ..models.dtype import WEIGHT_DTYPES, weights_dtype
from .materialize import build_with_weights
from .memory import check_fits, safetensors_shapes
from .meta import meta_model
from .state_dict import validate_state_dict


def check_files(bundle: Path, manifest: Manifest) -> None:
    """Every listed file exists and has its recorded sha256 (a flipped byte is exit 4), and no
    model file sits in the bundle unlisted (whoever ships the directory would trust it)."""
    loadable = ["model.safetensors", "model.pt", "model.onnx"]  # the files a consumer would load
    if (bundle / HF_DIR).is_dir():
        loadable += [path.relative_to(bundle).as_posix() for path in sorted((bundle / HF_DIR).iterdir())]
    for name in loadable:
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
        model = factory.build(manifest.rebuild["factory"], dict(manifest.rebuild["args"]))
        apply_resize(model, manifest.resize, where=f"{source}: resize")
    except PrunectlError as exc:
        raise type(exc)(f"{source}: rebuild: {exc}") from None
    return model


def bundle_dtype(manifest: Manifest, source: Path | str = MANIFEST_NAME) -> str | None:
    """The dtype a bundle's model is built in (manifest ``dtype``; None: as its factory builds it)."""
    dtype = manifest.extra.get("dtype")
    if dtype is not None and dtype not in WEIGHT_DTYPES:
        raise CheckpointError(f"{source}: dtype: expected one of {', '.join(WEIGHT_DTYPES)}, got {dtype!r}")
    return dtype


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
    with weights_dtype(bundle_dtype(manifest, bundle / MANIFEST_NAME)):  # as it was pruned (prune --dtype)
        model = build_with_weights(meta_model(manifest.rebuild["factory"], manifest.rebuild["args"],
                                              real_buffers=True),
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

