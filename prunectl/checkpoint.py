"""Reading checkpoints: state_dicts (.pt/.pth/.safetensors), the {"state_dict", "model"} form,
prunectl bundles, and (only with ``trust_pickle``) whole pickled modules.

Nothing here unpickles arbitrary objects unless the caller says ``trust_pickle=True``:
``torch.load(weights_only=True)`` refuses any global outside torch's tensor allowlist
before calling it, so a malicious ``__reduce__`` never runs.
"""
from __future__ import annotations

import hashlib
import pickle
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from . import factories
from .errors import CheckpointError, SpecError
from .resources import check_fits
from .spec import ModelRef

MANIFEST_NAME = "manifest.json"


@dataclass
class Loaded:
    """A model ready to prune, and where it came from."""

    model: nn.Module
    model_ref: ModelRef | None  # how to rebuild it without pickle; None if unknown
    path: Path
    digest: str | Future  # the file's sha256, or its computation still under way (sha256_soon)
    manifest: Any = None  # the prunectl Manifest when the checkpoint is a bundle

    @property
    def sha256(self) -> str:
        return self.digest if isinstance(self.digest, str) else self.digest.result()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_soon(path: str | Path) -> Future:
    """``file_sha256`` on a worker thread. hashlib and file reads release the GIL, so the digest
    of a large checkpoint (ViT-B: 350 MB, ~0.4 s) is computed while the model is loaded, traced
    and pruned instead of adding to the run; ``Loaded.sha256`` waits for it."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prunectl-sha256")
    try:
        return executor.submit(file_sha256, path)
    finally:
        executor.shutdown(wait=False)


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> tuple[dict | None, ModelRef | None, nn.Module | None]:
    """(state_dict, model_ref, module): what a checkpoint file holds; one of state_dict/module is set."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    if path.suffix == ".safetensors":
        return _read_safetensors(path), None, None
    obj = _torch_load(path, trust_pickle)
    if isinstance(obj, nn.Module):
        return None, None, obj
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        extra = sorted(set(obj) - {"state_dict", "model"})
        if extra:
            raise CheckpointError(f"{path}: unknown key {extra[0]!r} next to 'state_dict' (allowed: model, state_dict)")
        return validate_state_dict(obj["state_dict"], path), _model_ref(obj.get("model"), path), None
    if isinstance(obj, Mapping):
        return validate_state_dict(obj, path), None, None
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict, "
                          "a {'state_dict', 'model'} dict or an nn.Module")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state_dict = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {_first_line(exc)}") from None
    return validate_state_dict(state_dict, path)


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: contains pickled objects other than tensors ({_first_line(exc, 'Unsupported global')}); "
                "refusing to unpickle: pass --trust-pickle only if you trust who made this file") from None
        raise CheckpointError(f"{path}: cannot unpickle: {_first_line(exc)}") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors, ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None


def _model_ref(value: Any, path: Path) -> ModelRef | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("factory"), str):
        raise CheckpointError(f"{path}: 'model' must be {{'factory': 'module:Class', 'args': {{...}}}}")
    args = value.get("args", {})
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise CheckpointError(f"{path}: 'model.args' must be a dict of argument name -> value")
    return ModelRef(factory=value["factory"], args=dict(args))


def validate_state_dict(state_dict: Mapping, source: str | Path) -> dict[str, torch.Tensor]:
    """A plain dict of finite tensors, with a DataParallel ``module.`` prefix removed."""
    if not state_dict:
        raise CheckpointError(f"{source}: state_dict is empty")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: state_dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and value.numel() and not _all_finite(value):
            raise CheckpointError(f"{source}: state_dict[{key!r}] contains NaN or infinite values")
        out[key] = value
    if all(key.startswith("module.") for key in out):
        out = {key[len("module."):]: value for key, value in out.items()}
    return out


def _all_finite(tensor: torch.Tensor) -> bool:
    # a NaN or inf anywhere makes the sum non-finite, and a sum is 20x cheaper than isfinite()
    # over every element; only a non-finite sum (possibly an overflow) needs the full check
    with torch.no_grad():
        if bool(torch.isfinite(tensor.sum())):
            return True
        return bool(torch.isfinite(tensor).all())


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | Path,
                 assign: bool = False) -> None:
    """Strict load with a one-line message listing missing, unexpected and mis-shaped keys.

    ``assign``: the tensors become the model's (materialize.py, for a model built on meta)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mis_shaped)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{source}: does not fit the model ({type(model).__name__}): " + "; ".join(problems))
    if getattr(state_dict, "_metadata", None) is None:
        # safetensors files and validated copies lose torch's per-module version metadata, and some
        # modules refuse to load without it (torchvision's MNASNet); the model's own versions apply
        state_dict = with_metadata(state_dict, getattr(expected, "_metadata", None))
    try:
        model.load_state_dict(state_dict, strict=True, assign=assign)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: does not fit the model: {_first_line(exc)}") from None


def with_metadata(state_dict: Mapping[str, torch.Tensor], metadata: Any) -> Mapping[str, torch.Tensor]:
    if metadata is None:
        return state_dict
    from collections import OrderedDict

    copied: Any = OrderedDict(state_dict)
    copied._metadata = metadata
    return copied


def load_checkpoint(path: str | Path, model_ref: ModelRef | None = None, trust_pickle: bool = False) -> Loaded:
    """Load anything prunectl accepts as input. ``model_ref`` overrides the checkpoint's own."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            raise CheckpointError(f"{path}: is a directory without {MANIFEST_NAME}, so not a prunectl bundle")
        from .manifest import load_bundle  # bundles are checkpoints too: iterative pruning

        model, manifest = load_bundle(path)
        ref = ModelRef(manifest.rebuild["factory"], dict(manifest.rebuild["args"]))
        return Loaded(model, ref, path, file_sha256(path / MANIFEST_NAME), manifest)
    digest = sha256_soon(path) if path.is_file() else None  # read_checkpoint reports a missing file
    state_dict, stored_ref, module = read_checkpoint(path, trust_pickle)
    ref = model_ref or stored_ref
    if module is not None:
        module = module.cpu().eval()
        if ref is None:
            ref = ModelRef(f"{type(module).__module__}:{type(module).__qualname__}", {})
        return Loaded(module, ref, path, digest)
    if ref is None:
        raise SpecError(f"{path}: a state_dict needs a model: give \"model\": {{\"factory\": ...}} in the spec "
                        "or --model (e.g. torchvision:resnet18, mypkg.models:Net)")
    from .materialize import build_with_weights
    from .resources import meta_model

    def build() -> nn.Module:
        # shapes first, on the meta device: args from a file must not make us allocate a huge model
        check_fits(ref.factory, ref.args, {key: tuple(value.shape) for key, value in state_dict.items()}, path)
        return factories.build(ref.factory, dict(ref.args))

    model = build_with_weights(meta_model(ref.factory, ref.args), state_dict, path, build)
    return Loaded(model.eval(), ref, path, digest)


def _first_line(exc: BaseException, prefer: str | None = None) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if prefer:
        for line in lines:
            if prefer in line:
                return line[:300]
    return lines[0][:300] if lines else type(exc).__name__
