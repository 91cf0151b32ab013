"""A tiny decoder with a real tokenizer, built locally (no downloads): a Llama of
tests/support/llm_families.py saved as a Hugging Face folder, its tokenizer a word-level
``tokenizers`` model over ``w0 .. w{vocab-1}``, and seeded text in those words."""
from __future__ import annotations

from pathlib import Path

import torch

from prunectl.models import factory
from tests.support.llm_families import LLM_FAMILIES

FACTORY, ARGS = LLM_FAMILIES["llama"]


def word_tokenizer(vocab_size: int = ARGS["vocab_size"]):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def words(count: int, seed: int = 0, vocab_size: int = ARGS["vocab_size"]) -> str:
    """``count`` words with some structure (a word is often followed by its successor), seeded."""
    generator = torch.Generator().manual_seed(seed)
    ids = [int(torch.randint(vocab_size, (1,), generator=generator))]
    for _ in range(count - 1):
        follow = float(torch.rand(1, generator=generator)) < 0.5
        ids.append((ids[-1] + 1) % vocab_size if follow else int(torch.randint(vocab_size, (1,), generator=generator)))
    return " ".join(f"w{i}" for i in ids) + "\n"


def tiny_llama(seed: int = 0, **args) -> torch.nn.Module:
    torch.manual_seed(seed)
    return factory.build(FACTORY, {**ARGS, **args}).eval()


def llama_folder(path: Path, model: torch.nn.Module | None = None, tokenizer: bool = True) -> Path:
    """``save_pretrained`` of the model (default: tiny_llama()) with tokenizer.json beside it."""
    (model if model is not None else tiny_llama()).save_pretrained(path)
    if tokenizer:
        word_tokenizer().save(str(path / "tokenizer.json"))
    return path


def pruned_llama(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny Llama folder pruned at 0.3 into ``tmp_path/pruned``, and 1200 words of text beside it."""
    import prunectl

    folder = llama_folder(tmp_path / "original")
    text = tmp_path / "calib.txt"
    text.write_text(words(1200), encoding="utf-8")
    prunectl.prune(folder, prunectl.PruneOptions(rate=0.3, output=tmp_path / "pruned"))
    return tmp_path / "pruned", text
