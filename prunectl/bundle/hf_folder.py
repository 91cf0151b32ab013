"""``hf/`` in a bundle: the pruned transformers model as a folder stock ``from_pretrained`` loads.

    AutoModelForCausalLM.from_pretrained("out/hf")     # no prunectl, no trust_remote_code

Written when the rebuild args are a stock config for the pruned widths, that is when
``factory(**args)`` alone (what ``from_pretrained`` builds from config.json) has every weight
shape of the pruned model. Widths that differ per layer, or that no config field holds (BERT's
heads: its head size is ``hidden_size / num_attention_heads``), fit no stock config: then no
``hf/`` is written and the manifest says why. The folder is checked before it is kept: the
stock model holding the pruned weights must give the pruned model's outputs bit for bit on the
proof's first input. Tokenizer and generation files of an input folder (or of an input
bundle's ``hf/``, or the tokenizer a GGUF input carries) are copied alongside.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import PrunectlError, first_line
from ..formats.manifest import HF_DIR
from ..loading.gguf_file import save_tokenizer
from ..loading.materialize import build_with_weights
from ..loading.meta import meta_model
from ..models import factory
from ..models.forward import run
from ..models.hf_provider import is_hf_model

# what a model folder carries besides config and weights (tokenizers of every kind, generation)
COMPANION_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
                   "chat_template.jinja", "chat_template.json", "generation_config.json")


def write_hf_folder(staging: Path, model: nn.Module, rebuild: dict[str, Any], example: torch.Tensor,
                    companions: Path | None) -> dict[str, Any] | None:
    """Write ``staging/hf``; the manifest's ``hf`` facts (None: not a transformers model)."""
    if not is_hf_model(model) or not str(rebuild.get("factory", "")).startswith("hf:"):
        return None
    stock, why = _stock_model(model, rebuild)
    if stock is None:
        return {"written": False, "reason": why}
    with torch.no_grad():
        same = all(torch.equal(a, b) for a, b in zip(run(stock.eval(), example, "stock model"),
                                                      run(model.eval(), example, "pruned model")))
    if not same:
        return {"written": False, "reason": "the stock model built from config.json does not compute what the "
                                            "pruned model computes (module attributes beyond the config)"}
    folder = staging / HF_DIR
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # prunectl shows its own progress
    try:
        stock.save_pretrained(folder, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if companions is not None:
        _copy_companions(companions, folder, staging)
    return {"written": True, "config": type(stock.config).__name__}


def _copy_companions(companions: Path, folder: Path, staging: Path) -> None:
    """The tokenizer and generation files of ``companions`` into ``folder``; a GGUF file's
    tokenizer is first saved into the staging directory (gone with it if the run fails)."""
    written = None
    if companions.is_file():
        written = staging / ".gguf-tokenizer"
        save_tokenizer(companions, written)
        companions = written
    for name in COMPANION_FILES:  # the input's generation_config (its eos ids) beats the default one
        if (companions / name).is_file():
            shutil.copyfile(companions / name, folder / name)
    if written is not None:  # every file left in staging is sealed into the manifest
        shutil.rmtree(written)


def _stock_model(model: nn.Module, rebuild: dict[str, Any]) -> tuple[nn.Module | None, str]:
    name, args = rebuild["factory"], dict(rebuild["args"])
    skeleton = meta_model(name, args, real_buffers=True)
    if skeleton is None:
        return None, f"{name} cannot be built from the rebuild args alone"
    weights = model.state_dict()
    wanted = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    for key, value in weights.items():
        if wanted.get(key) != tuple(value.shape):
            return None, (f"the pruned widths fit no stock {type(skeleton.config).__name__} (first: {key} is "
                          f"{list(value.shape)}, the config gives {list(wanted.get(key, ()))}); prunectl.load "
                          "rebuilds it from the manifest")
    copied = {key: value.detach().clone() for key, value in weights.items()}
    try:
        return build_with_weights(skeleton, copied, "pruned weights", lambda: factory.build(name, args)), ""
    except PrunectlError as exc:
        return None, f"the pruned weights do not load into the stock {name}: {first_line(exc)}"
