"""Perplexity of a causal language model on text, with the protocol written next to the number.

    result = prunectl.evaluate_perplexity(model, "tokenizer.json", Path("wiki.test.txt"), seq_len=256)
    result.perplexity, result.to_json()   # the number and its protocol

The protocol is the strided one of transformers' perplexity guide: the token stream (the whole
text encoded once, truncated to ``max_tokens``) is read in windows of ``seq_len`` tokens starting
every ``stride`` tokens; each window scores only the tokens no earlier window scored (with
``stride == seq_len``, non-overlapping windows, every token but a window's first). Perplexity is
``exp(sum of NLL / tokens scored)``, the NLL taken from the model's logits in float64 (the model
itself runs in its own dtype, reported as ``dtype``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import SpecError
from ..formats.spec import ModelRef
from ..loading.checkpoint import load_checkpoint
from ..loading.text_data import is_text, token_ids, vocabulary_size
from ..loading.tokenizer import as_tokenizer, find_tokenizer
from ..models.device import device_of, on_device, resolve_device
from ..options import DEFAULT_EVAL_SEQ_LEN


@dataclass(frozen=True)
class Perplexity:
    perplexity: float
    nll: float  # mean negative log-likelihood per scored token, in nats
    tokens: int  # tokens scored
    windows: int
    seq_len: int
    stride: int
    dtype: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def before_and_after(before: Perplexity, after: Perplexity) -> dict[str, Any]:
    """report.json's ``perplexity``: both numbers and the one protocol they were measured with."""
    protocol = {key: value for key, value in after.to_json().items() if key not in ("perplexity", "nll")}
    return {"before": before.perplexity, "after": after.perplexity, "protocol": protocol}


def eval_tokens(path: Path, tokenizer: Any, model: nn.Module, option: str = "--eval-data") -> torch.Tensor:
    """The token stream of a ``.txt`` evaluation file, encoded with the model's tokenizer."""
    if not is_text(path):
        raise SpecError(f"{option} {path}: expected a plain UTF-8 text file (.txt)")
    return token_ids(path, None if tokenizer is None else as_tokenizer(tokenizer), model, option)


def evaluate_perplexity(model: nn.Module, tokens: Any, text: str | Path | None = None, *,
                        seq_len: int = DEFAULT_EVAL_SEQ_LEN, stride: int | None = None,
                        max_tokens: int | None = None, source: str | None = None,
                        device: torch.device | str | None = None) -> Perplexity:
    """Perplexity of ``model`` on token ids (``tokens``: a 1-D int tensor, or ``[1, N]``), or on
    ``text`` (a string, or a ``Path`` to a UTF-8 file) encoded with ``tokens`` as the tokenizer (a
    tokenizer.json path or folder, a tokenizers ``Tokenizer``, a transformers tokenizer).

    ``device`` (``--device``): the model runs there for the evaluation and comes back; None: where it is."""
    stride = seq_len if stride is None else stride
    for name, value in (("--seq-len", seq_len), ("--stride", stride), ("--max-tokens", max_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpecError(f"{name}: expected an integer >= 1, got {value!r}")
    if stride > seq_len:
        raise SpecError(f"--stride {stride}: longer than --seq-len {seq_len} would skip tokens")
    ids, source = _ids(model, tokens, text, source)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if ids.numel() < max(seq_len, 2):
        raise SpecError(f"{source}: {ids.numel()} tokens, fewer than one window of {seq_len} (--seq-len)")
    total, scored, count, previous_end = 0.0, 0, 0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), on_device(model, device if device is not None else device_of(model)):
            for begin in range(0, ids.numel(), stride):
                end = min(begin + seq_len, ids.numel())
                window = ids[begin:end]
                first = max(1, previous_end - begin)  # positions before it were scored by an earlier window
                if end - begin >= 2 and first < end - begin:
                    nll = _window_nll(model, window)
                    total += float(nll[first - 1:].sum())
                    scored += nll[first - 1:].numel()
                    count += 1
                previous_end = end
                if end == ids.numel():
                    break
    finally:
        model.train(was_training)
    mean = total / scored
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return Perplexity(float(torch.tensor(mean, dtype=torch.float64).exp()), mean, scored, count, seq_len, stride,
                      dtype, source)


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, tokenizer: str | Path | None = None,
                        seq_len: int = DEFAULT_EVAL_SEQ_LEN, stride: int | None = None, max_tokens: int | None = None,
                        model: str | None = None, trust_pickle: bool = False,
                        device: str | torch.device | None = None) -> dict[str, Any]:
    """``prunectl eval``: perplexity of a checkpoint's, folder's or bundle's language model on a .txt file."""
    where = resolve_device(device)  # a device that is not here: exit 3 before anything is read
    loaded = load_checkpoint(checkpoint, ModelRef(model, {}) if model else None, trust_pickle)
    ids = eval_tokens(Path(data), find_tokenizer(tokenizer, checkpoint), loaded.model, "--data")
    result = evaluate_perplexity(loaded.model.eval(), ids, seq_len=seq_len, stride=stride, max_tokens=max_tokens,
                                 source=str(data), device=where)
    return {"checkpoint": str(checkpoint), **result.to_json()}


def _ids(model: nn.Module, tokens: Any, text: str | Path | None, source: str | None) -> tuple[torch.Tensor, str]:
    if isinstance(tokens, torch.Tensor):
        if text is not None:
            raise SpecError("evaluate_perplexity: give token ids, or a tokenizer and text, not ids and text")
        if tokens.is_floating_point() or tokens.dim() > 2 or (tokens.dim() == 2 and tokens.shape[0] != 1):
            raise SpecError(f"evaluate_perplexity: expected a 1-D stream of token ids, got {tuple(tokens.shape)} "
                            f"{tokens.dtype}")
        return tokens.reshape(-1).long(), source or "token ids"
    if text is None:
        raise SpecError("evaluate_perplexity: a tokenizer needs the text to encode (text=...)")
    tokenizer = as_tokenizer(tokens)
    if isinstance(text, Path):
        return token_ids(text, tokenizer, model), source or str(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.int64)
    vocabulary = vocabulary_size(model)
    if vocabulary is not None and ids.numel() and int(ids.max()) >= vocabulary:
        raise SpecError(f"tokenizer {tokenizer.source} gives token id {int(ids.max())}, but the model embeds "
                        f"{vocabulary} ids")
    return ids, source or "text"


def _window_nll(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    """NLL of tokens 1..n-1 of the window, each predicted from the ones before it, in float64."""
    window = window.to(device_of(model))
    inputs = window.unsqueeze(0)
    output = model(input_ids=inputs, use_cache=False) if hasattr(model, "config") else model(inputs)
    logits = getattr(output, "logits", output)[0, :-1].double()
    return -torch.log_softmax(logits, dim=-1).gather(1, window[1:, None]).squeeze(1)
