"""A Hugging Face model folder as a checkpoint: config.json and its weights, never unpickled.

    prunectl prune ./SmolLM2-135M --rate 0.3 -o out      # what save_pretrained wrote

The model is ``hf:<architectures[0]>`` (or the config's ``model_type``: its base model) with the
config.json fields as factory args; the weights are ``model.safetensors``, the shards that
``model.safetensors.index.json`` lists, or ``pytorch_model.bin`` read with ``weights_only`` (no
pickled objects). ``save_pretrained`` leaves tied weights out (an ``lm_head`` tied to the
embeddings): they are filled from the tensor they are tied to, as ``from_pretrained`` does.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..formats.checksums import file_sha256
from ..formats.spec import ModelRef
from ..formats.strict_json import read_json
from .meta import meta_model
from .state_dict import validate_state_dict

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_NAME = "pytorch_model.bin"


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file()


def companion_folder(checkpoint: str | Path | None) -> Path | None:
    """Where a run's tokenizer and generation files come from: the input folder, or an input
    bundle's ``hf/``."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    if (path / "hf").is_dir():
        return path / "hf"
    return path if is_hf_folder(path) else None


def read_hf_folder(path: Path, fold_masks: bool = True) -> tuple[dict[str, torch.Tensor], ModelRef, str]:
    """(state_dict, model ref, sha256 over config and weight files) of a Hugging Face folder."""
    config = read_json(path / CONFIG_NAME, CheckpointError)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / CONFIG_NAME}: expected a JSON object of config fields")
    ref = ModelRef(factory=f"hf:{_model_name(config, path)}",
                   args={key: value for key, value in config.items() if key != "_name_or_path"})
    files = _weight_files(path)
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        part = _read_weights(file)
        clash = sorted(set(part) & set(state_dict))
        if clash:
            raise CheckpointError(f"{file}: key {clash[0]!r} is also in another shard")
        state_dict.update(part)
    state_dict = validate_state_dict(state_dict, path, fold_masks)
    digest = hashlib.sha256("".join(f"{f.name}:{file_sha256(f)}\n"
                                    for f in [path / CONFIG_NAME, *files]).encode()).hexdigest()
    return _with_tied(state_dict, ref), ref, digest


def _model_name(config: dict[str, Any], path: Path) -> str:
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    if isinstance(config.get("model_type"), str):
        return config["model_type"]
    raise CheckpointError(f"{path / CONFIG_NAME}: architectures: missing (and no model_type): cannot tell which "
                          "transformers model this is")


def _weight_files(path: Path) -> list[Path]:
    if (path / SAFETENSORS_INDEX).is_file():
        index = read_json(path / SAFETENSORS_INDEX, CheckpointError)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{path / SAFETENSORS_INDEX}: weight_map: expected tensor name -> shard file")
        shards = sorted(set(weight_map.values()))
        for shard in shards:  # names from a file: never a path outside the folder
            if Path(shard).name != shard or not (path / shard).is_file():
                raise CheckpointError(f"{path / SAFETENSORS_INDEX}: weight_map: shard {shard!r} is not a file "
                                      "in the folder")
        return [path / shard for shard in shards]
    for name in (SAFETENSORS_NAME, PYTORCH_NAME):
        if (path / name).is_file():
            return [path / name]
    raise CheckpointError(f"{path}: a Hugging Face folder without weights ({SAFETENSORS_NAME}, {SAFETENSORS_INDEX} "
                          f"or {PYTORCH_NAME})")


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(file), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{file}: not a readable safetensors file: {exc}") from None
    try:
        weights = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, zipfile errors, ...
        raise CheckpointError(f"{file}: not a readable PyTorch weights file "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(weights, dict):
        raise CheckpointError(f"{file}: holds a {type(weights).__name__}, not a state_dict")
    return weights


def _with_tied(state_dict: dict[str, torch.Tensor], ref: ModelRef) -> dict[str, torch.Tensor]:
    """Tied parameters left out of the files, filled from the one saved (the model on meta says which)."""
    skeleton = meta_model(ref.factory, ref.args)
    if skeleton is None:
        return state_dict  # the build reports its own problem
    names_by_tensor: dict[int, list[str]] = {}
    for name, parameter in skeleton.named_parameters(remove_duplicate=False):
        names_by_tensor.setdefault(id(parameter), []).append(name)
    filled = dict(state_dict)
    for names in names_by_tensor.values():
        present = [name for name in names if name in state_dict]
        for name in names:
            if present and name not in filled:
                filled[name] = state_dict[present[0]]
    return filled
