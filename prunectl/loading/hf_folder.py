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
import torch.nn as nn

from ..errors import CheckpointError
from ..formats.checksums import file_sha256
from ..formats.spec import ModelRef
from ..formats.strict_json import read_json

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_NAME = "pytorch_model.bin"


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file()


def read_hf_folder(path: Path) -> tuple[ModelRef, list[Path], str]:
    """(model ref, weight files, sha256 over config and weight files) of a Hugging Face folder;
    ``loading.checkpoint`` reads the weight files as it reads any state_dict file."""
    config = read_json(path / CONFIG_NAME, CheckpointError)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / CONFIG_NAME}: expected a JSON object of config fields")
    ref = config_model_ref(config, path / CONFIG_NAME)
    files = _weight_files(path)
    digest = hashlib.sha256("".join(f"{f.name}:{file_sha256(f)}\n"
                                    for f in [path / CONFIG_NAME, *files]).encode()).hexdigest()
    return ref, files, digest


def config_model_ref(config: dict[str, Any], source: Path) -> ModelRef:
    """``hf:<architectures[0]>`` (or the ``model_type``'s base model) with the config's fields as
    args: how a config.json (or a GGUF's config, gguf_file.py) becomes a model ref."""
    return ModelRef(factory=f"hf:{_model_name(config, source)}",
                    args={key: value for key, value in config.items() if key != "_name_or_path"})


def _model_name(config: dict[str, Any], source: Path) -> str:
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    if isinstance(config.get("model_type"), str):
        return config["model_type"]
    raise CheckpointError(f"{source}: architectures: missing (and no model_type): cannot tell which "
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


def with_tied(state_dict: dict[str, torch.Tensor], skeleton: nn.Module | None) -> dict[str, torch.Tensor]:
    """Tied parameters left out of the files, filled from the one saved (``skeleton``, the model on
    meta, says which are tied)."""
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
