"""A GGUF file as a checkpoint, read by transformers' own GGUF loader (extra ``gguf``).

    prunectl prune SmolLM2-135M-Instruct.Q4_1.gguf --rate 0.3 -o out

Many small models ship only as GGUF (llama.cpp's format). transformers reads one into its own
model class: the config from the GGUF metadata, the tensors dequantised to float32 and renamed
(llama.cpp's permuted q/k rows put back). prunectl takes exactly that model: the model ref is
``hf:<its class>`` with the config's fields as args, the fields ``save_pretrained`` would write
to config.json, so the run is the run of the same model saved as a Hugging Face folder; the
weights digest is the file's sha256. Quantisation is not kept: the bundle holds the dequantised
(pruned) weights. The tokenizer in the GGUF metadata is written out as tokenizer files for the
bundle's ``hf/`` (``save_tokenizer``).
"""
from __future__ import annotations

import gc
import importlib.util
import io
import json
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import CheckpointError, UnsupportedError, first_line
from ..formats.spec import ModelRef
from .gguf_header import check_dequantised_fits
from .hf_folder import config_model_ref

GGUF_SUFFIX = ".gguf"
GGUF_MAGIC = b"GGUF"
# what transformers' GGUF loader imports (accelerate and psutil: from_pretrained's low-memory path)
_NEEDS = ("transformers", "gguf", "accelerate", "psutil")


def is_gguf(path: Path) -> bool:
    """A file named ``*.gguf`` or starting with GGUF's magic (read_gguf says what is wrong with it)."""
    if not path.is_file():
        return False
    if path.suffix.lower() == GGUF_SUFFIX:
        return True
    with path.open("rb") as handle:
        return handle.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def read_gguf(path: Path) -> tuple[ModelRef, dict[str, torch.Tensor]]:
    """(model ref, float32 state_dict) of a GGUF file, through ``from_pretrained(gguf_file=...)``."""
    _check_readable(path)
    check_dequantised_fits(path)  # before transformers allocates the float32 copies
    from transformers import AutoModelForCausalLM

    try:
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                         local_files_only=True)
    except Exception as exc:  # gguf raises ValueError/struct errors on a truncated file, transformers its own
        raise CheckpointError(f"{path}: transformers cannot read this GGUF file ({type(exc).__name__}: "
                              f"{first_line(exc)})") from None
    # the fields config.json would hold (save_pretrained names the class in architectures); the
    # quantization_config only says how this file was read: kept, it would make hf/ a GGUF loader's
    # (and transformers' private fields: ``_model_name_or_path`` from the GGUF's general.name)
    config = {key: value for key, value in json.loads(model.config.to_json_string(use_diff=True)).items()
              if key != "quantization_config" and not key.startswith("_")}
    config["architectures"] = [type(model).__name__]
    state_dict = model.state_dict()
    del model
    # transformers' GGUF loading leaves reference cycles that own ~1 float32 copy of the weights,
    # and prune runs with the cyclic collector paused (api._collector_paused): one collection here
    # (~0.2 s of a load that dequantises for 20 s) keeps that copy from living to the end of the run
    gc.collect()
    return config_model_ref(config, path), state_dict


def gguf_tokenizer(path: Path) -> Any:
    """The transformers tokenizer the GGUF carries (its vocabulary, merges and chat template)."""
    _check_readable(path)
    from transformers import AutoTokenizer

    try:
        with _quiet():
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: transformers cannot read the GGUF's tokenizer ({type(exc).__name__}: "
                              f"{first_line(exc)})") from None


def save_tokenizer(path: Path, folder: Path) -> None:
    """The GGUF's tokenizer as tokenizer files in ``folder`` (``save_pretrained``'s own files)."""
    gguf_tokenizer(path).save_pretrained(folder)


@contextmanager
def _quiet() -> Iterator[None]:
    """transformers' progress bars off (prunectl shows its own progress), then as they were. The
    GGUF loader's "de-quantizing" bar is a bare tqdm that no transformers switch turns off, and
    tqdm reads its TQDM_DISABLE variable only when it is imported: its output is dropped instead
    (what goes wrong is raised, not printed)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _check_readable(path: Path) -> None:
    with path.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise CheckpointError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise UnsupportedError(f"{path}: reading a GGUF file needs {', '.join(missing)}: "
                               "pip install 'prunectl[gguf]'")
