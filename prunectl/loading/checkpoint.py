"""Reading checkpoints: state_dicts (.pt/.pth/.safetensors), the {"state_dict", "model"} form,
prunectl bundles, Hugging Face model folders (hf_folder.py), GGUF files (gguf_file.py), and (only
with ``trust_pickle``) whole pickled modules.

Nothing here unpickles arbitrary objects unless the caller says ``trust_pickle=True``:
``torch.load(weights_only=True)`` refuses any global outside torch's tensor allowlist
before calling it, so a malicious ``__reduce__`` never runs.
"""
from __future__ import annotations

import pickle
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import CheckpointError, SpecError, first_line
from ..formats.checksums import file_sha256, sha256_soon
from ..formats.manifest import HF_DIR, MANIFEST_NAME, Manifest
from ..formats.spec import ModelRef
from ..models import factory
from .bundle import load_bundle
from .gguf_file import is_gguf, read_gguf
from .hf_folder import CONFIG_NAME, is_hf_folder, read_hf_folder, with_tied
from .materialize import build_with_weights
from .memory import check_fits, return_freed_memory
from .meta import meta_model
from .state_dict import validate_state_dict


@dataclass
class Loaded:
    """A model ready to prune, and where it came from."""

    model: nn.Module
    model_ref: ModelRef | None  # how to rebuild it without pickle; None if unknown
    path: Path
    digest: str | Future  # the file's sha256, or its computation still under way (sha256_soon)
    manifest: Manifest | None = None  # when the checkpoint is a bundle

    @property
    def sha256(self) -> str:
        return self.digest if isinstance(self.digest, str) else self.digest.result()


def companions_of(checkpoint: str | Path | None) -> Path | None:
    """Where a run's tokenizer and generation files come from: the input folder, an input
    bundle's ``hf/``, or a GGUF file (its tokenizer is written out with ``hf/``: bundle/hf_folder.py)."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    if (path / HF_DIR).is_dir():
        return path / HF_DIR
    return path if is_hf_folder(path) or is_gguf(path) else None


def read_checkpoint(path: str | Path, trust_pickle: bool = False, fold_masks: bool = True
                    ) -> tuple[dict | None, ModelRef | None, nn.Module | None]:
    """(state_dict, model_ref, module): what a checkpoint file holds; one of state_dict/module is set.

    ``fold_masks``: torch.nn.utils.prune's ``*_orig``/``*_mask`` pairs become the masked tensor
    (False: returned as saved)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, fold_masks), None, None
    obj = _torch_load(path, trust_pickle)
    if isinstance(obj, nn.Module):
        return None, None, obj
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        extra = sorted(set(obj) - {"state_dict", "model"})
        if extra:
            raise CheckpointError(f"{path}: unknown key {extra[0]!r} next to 'state_dict' (allowed: model, state_dict)")
        return (validate_state_dict(obj["state_dict"], path, fold_masks), _model_ref(obj.get("model"), path),
                None)
    if isinstance(obj, Mapping):
        return validate_state_dict(obj, path, fold_masks), None, None
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict, "
                          "a {'state_dict', 'model'} dict or an nn.Module")


def _read_safetensors(path: Path, fold_masks: bool = True) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state_dict = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {first_line(exc)}") from None
    return validate_state_dict(state_dict, path, fold_masks)


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    if trust_pickle:  # the pickle names its classes by module path, as a factory does
        factory.project_importable()
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: contains pickled objects other than tensors ({first_line(exc, 'Unsupported global')}); "
                "refusing to unpickle: pass --trust-pickle only if you trust who made this file") from None
        raise CheckpointError(f"{path}: cannot unpickle: {first_line(exc)}") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors, ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                              f"({type(exc).__name__}: {first_line(exc)})") from None


def _model_ref(value: Any, path: Path) -> ModelRef | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("factory"), str):
        raise CheckpointError(f"{path}: 'model' must be {{'factory': 'module:Class', 'args': {{...}}}}")
    args = value.get("args", {})
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise CheckpointError(f"{path}: 'model.args' must be a dict of argument name -> value")
    return ModelRef(factory=value["factory"], args=dict(args))


def load_checkpoint(path: str | Path, model_ref: ModelRef | None = None, trust_pickle: bool = False) -> Loaded:
    """Load anything prunectl accepts as input. ``model_ref`` overrides the checkpoint's own."""
    path = Path(path)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        model, manifest = load_bundle(path)
        ref = ModelRef(manifest.rebuild["factory"], dict(manifest.rebuild["args"]))
        return Loaded(model, ref, path, file_sha256(path / MANIFEST_NAME), manifest)
    if path.is_dir():
        if not is_hf_folder(path):
            raise CheckpointError(f"{path}: a directory without {MANIFEST_NAME} or {CONFIG_NAME}: neither a prunectl "
                                  "bundle nor a Hugging Face model folder")
        stored_ref, files, digest = read_hf_folder(path)
        state_dict, module = _read_shards(files), None
    elif is_gguf(path):
        digest = sha256_soon(path)
        (stored_ref, state_dict), module = read_gguf(path), None
    else:
        digest = sha256_soon(path) if path.is_file() else None  # read_checkpoint reports a missing file
        state_dict, stored_ref, module = read_checkpoint(path, trust_pickle)
    ref = model_ref or stored_ref
    if module is not None:
        module = module.cpu().eval()
        if ref is None:
            ref = ModelRef.of_class(module)
        return Loaded(module, ref, path, digest)
    if ref is None:
        raise SpecError(f"{path}: a state_dict needs a model: give \"model\": {{\"factory\": ...}} in the spec "
                        "or --model (e.g. torchvision:resnet18, mypkg.models:Net)")
    def build() -> nn.Module:
        # shapes first, on the meta device: args from a file must not make us allocate a huge model
        check_fits(ref.factory, ref.args, {key: tuple(value.shape) for key, value in state_dict.items()}, path)
        return factory.build(ref.factory, dict(ref.args))

    skeleton = meta_model(ref.factory, ref.args, real_buffers=True)
    if path.is_dir():  # save_pretrained leaves tied weights out of the files
        state_dict = with_tied(state_dict, skeleton)
    model = build_with_weights(skeleton, state_dict, path, build)
    state_dict = None  # the file's tensors (a GGUF's dequantised copy): copied into the model, dropped
    return_freed_memory()  # what reading and building freed (a GGUF's float32 copies) goes back
    return Loaded(model.eval(), ref, path, digest)


def _read_shards(files: list[Path]) -> dict[str, torch.Tensor]:
    """One state_dict from a Hugging Face folder's weight files, each read like any checkpoint file."""
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        part, _, _ = read_checkpoint(file)
        clash = sorted(set(part) & set(state_dict))
        if clash:
            raise CheckpointError(f"{file}: key {clash[0]!r} is also in another shard")
        state_dict.update(part)
    return state_dict
