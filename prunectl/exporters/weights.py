"""model.safetensors and model.pt: the same state_dict, two containers, byte-deterministic."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn


def portable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies: tied or viewed tensors would otherwise share storage, which
    safetensors refuses and which makes torch.save write whole underlying storages."""
    return {key: value.detach().to("cpu").clone().contiguous() for key, value in model.state_dict().items()}


def write_safetensors(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    # one metadata key only: safetensors writes metadata in hash-map order, which varies
    # between runs, so a second key would make identical bundles differ byte-wise
    save_file(state_dict, str(path), metadata={"format": "pt"})


def write_pt(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    torch.save(state_dict, path)

