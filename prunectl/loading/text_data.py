"""Plain text as a language model's calibration data: ``--data text.txt``, tokenised, cut into windows.

The file is read as UTF-8 and encoded once, whole, with the model's own tokenizer
(loading/tokenizer.py). The token stream is cut into consecutive windows of ``seq_len`` tokens
(a last partial window is dropped) and ``tokens // seq_len`` of them are drawn with a generator
seeded by ``seed``, then kept in file order: the same file, tokenizer and seed give the same
windows, hence the same scores and the same bundle bytes. A file with fewer windows gives all of
them (the report says how many tokens were used); one without a single window is an error. Each
window is its own target (next-token cross-entropy), so gradient criteria (``taylor``) have a loss.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SpecError
from ..options import DEFAULT_CALIB_SEQ_LEN, DEFAULT_CALIB_TOKENS
from .data import CalibrationData, load_data
from .tokenizer import TextTokenizer

TEXT_SUFFIXES = (".txt",)
WINDOWS_PER_BATCH = 8  # 8 x 128 tokens per forward: the activations of a small LLM stay in the tens of MB


def is_text(source: str | Path | None) -> bool:
    return source is not None and Path(source).suffix.lower() in TEXT_SUFFIXES


def vocabulary_size(model: nn.Module) -> int | None:
    """The number of token ids the model embeds (transformers' ``get_input_embeddings``), or None."""
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    return getattr(embedding, "num_embeddings", None)


def token_ids(path: Path, tokenizer: TextTokenizer | None, model: nn.Module, option: str = "--data") -> torch.Tensor:
    """The file's text as one int64 stream of token ids, checked against the model's vocabulary."""
    vocabulary = vocabulary_size(model)
    if vocabulary is None:
        raise SpecError(f"{option} {path}: text data is for transformers language models; {type(model).__name__} "
                        "has no input embedding (give token ids or inputs as a .pt/.npz file)")
    if tokenizer is None:
        raise SpecError(f"{option} {path}: text needs the model's tokenizer, and the checkpoint is not a Hugging Face "
                        "folder (or bundle with hf/) holding one: pass --tokenizer PATH (a tokenizer.json or a folder)")
    if not path.is_file():
        raise SpecError(f"{option} {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{option} {path}: not UTF-8 text (byte {exc.start})") from None
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.int64)
    if ids.numel() and int(ids.max()) >= vocabulary:
        raise SpecError(f"{option} {path}: tokenizer {tokenizer.source} gives token id {int(ids.max())}, but the "
                        f"model embeds {vocabulary} ids: not the model's tokenizer")
    return ids


def windows(ids: torch.Tensor, seq_len: int, tokens: int, seed: int, source: str) -> torch.Tensor:
    """``[N, seq_len]``: ``tokens // seq_len`` windows drawn (seeded) from the consecutive ones, in order."""
    available = ids.numel() // seq_len
    if available == 0:
        raise SpecError(f"--data {source}: {ids.numel()} tokens, fewer than one window of {seq_len} "
                        "(--calib-seq-len)")
    wanted = max(1, tokens // seq_len)
    cut = ids[: available * seq_len].view(available, seq_len)
    if wanted >= available:
        return cut.clone()
    chosen = torch.randperm(available, generator=torch.Generator().manual_seed(seed))[:wanted]
    return cut[chosen.sort().values].clone()


def causal_lm_loss(output: Any, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of a language model's output (logits or an output with ``.logits``)."""
    logits = getattr(output, "logits", output)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def text_calibration(path: Path, tokenizer: TextTokenizer | None, model: nn.Module,
                     seq_len: int = DEFAULT_CALIB_SEQ_LEN, tokens: int = DEFAULT_CALIB_TOKENS,
                     seed: int = 0) -> CalibrationData:
    ids = windows(token_ids(path, tokenizer, model), seq_len, tokens, seed, str(path))
    batches = tuple((ids[i:i + WINDOWS_PER_BATCH], ids[i:i + WINDOWS_PER_BATCH])
                    for i in range(0, len(ids), WINDOWS_PER_BATCH))
    details = {"file": str(path), "tokenizer": tokenizer.source if tokenizer else None, "seq_len": seq_len,
               "windows": len(ids), "tokens": ids.numel(), "seed": seed}
    return CalibrationData(batches, causal_lm_loss, str(path), details)


def load_calibration(source: str | Path, model: nn.Module, tokenizer: TextTokenizer | None,
                     seq_len: int = DEFAULT_CALIB_SEQ_LEN, tokens: int = DEFAULT_CALIB_TOKENS,
                     seed: int = 0) -> CalibrationData:
    """``--data``: a text file for a language model, else a tensor file or task (loading/data.py)."""
    for name, value in (("--calib-seq-len", seq_len), ("--calib-tokens", tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise SpecError(f"{name}: expected an integer >= 2, got {value!r}")
    if is_text(source):
        return text_calibration(Path(source), tokenizer, model, seq_len, tokens, seed)
    return load_data(source)
