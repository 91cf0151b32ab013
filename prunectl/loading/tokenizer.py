"""The model's own tokenizer, for text calibration and perplexity: where it is and how it encodes.

Where it comes from, first found: ``--tokenizer PATH`` (a ``tokenizer.json`` or a folder holding
one), else the checkpoint when it is a Hugging Face folder, else an input bundle's ``hf/``. A
``tokenizer.json`` is read with the ``tokenizers`` library, as is: its normalizer, pre-tokenizer
and post-processor (a BOS token once at the start of the text, where the tokenizer adds one), the
same ids ``AutoTokenizer`` gives for ``tokenizer(text)``. A folder with no ``tokenizer.json`` (a
sentencepiece ``tokenizer.model`` only) is opened with transformers' ``AutoTokenizer``, offline.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SpecError
from .checkpoint import companions_of
from .gguf_file import gguf_tokenizer, is_gguf

TOKENIZER_JSON = "tokenizer.json"


@dataclass(frozen=True)
class TextTokenizer:
    """``encode(text) -> token ids`` of a tokenizers ``Tokenizer`` or a transformers tokenizer."""

    backend: Any
    source: str

    def encode(self, text: str) -> list[int]:
        from tokenizers import Tokenizer

        if isinstance(self.backend, Tokenizer):
            return list(self.backend.encode(text).ids)
        return list(self.backend(text)["input_ids"])  # a transformers tokenizer, special tokens as it adds them


def as_tokenizer(value: Any) -> TextTokenizer:
    """A ``TextTokenizer`` from a path (tokenizer.json or folder), a tokenizers ``Tokenizer`` or a
    transformers tokenizer object."""
    if isinstance(value, TextTokenizer):
        return value
    if isinstance(value, (str, Path)):
        return load_tokenizer(Path(value))
    from tokenizers import Tokenizer

    if isinstance(value, Tokenizer):
        return TextTokenizer(value, "tokenizers.Tokenizer")
    if hasattr(value, "encode") and callable(value):  # a transformers tokenizer
        return TextTokenizer(value, type(value).__name__)
    raise SpecError(f"expected a tokenizer (a tokenizer.json path, a folder, a tokenizers.Tokenizer or a "
                    f"transformers tokenizer), got {type(value).__name__}")


def find_tokenizer(explicit: Any, checkpoint: str | Path | None) -> TextTokenizer | None:
    """``--tokenizer`` if given (a path, or in the library a tokenizer object), else the one beside
    the checkpoint (its folder, a bundle's hf/, or the GGUF file's own)."""
    if explicit is not None:
        return as_tokenizer(explicit)
    folder = companions_of(checkpoint)
    if folder is not None and is_gguf(folder):  # the tokenizer the GGUF file carries
        return TextTokenizer(gguf_tokenizer(folder), "GGUF tokenizer")
    if folder is None or not _has_tokenizer(folder):
        return None
    return load_tokenizer(folder)


def load_tokenizer(path: Path) -> TextTokenizer:
    file = path / TOKENIZER_JSON if path.is_dir() else path
    if file.is_file():
        from tokenizers import Tokenizer

        try:
            return TextTokenizer(Tokenizer.from_file(str(file)), str(file))
        except Exception as exc:  # the tokenizers library raises its own Exception subclass
            raise SpecError(f"--tokenizer {file}: not a readable tokenizer.json ({str(exc).splitlines()[0]})") from None
    if path.is_dir() and _has_tokenizer(path):
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise SpecError(f"--tokenizer {path}: a folder without tokenizer.json needs transformers "
                            "(pip install 'prunectl[hf]')") from None
        try:
            return TextTokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True), str(path))
        except Exception as exc:
            raise SpecError(f"--tokenizer {path}: transformers cannot open its tokenizer ({type(exc).__name__})") \
                from None
    raise SpecError(f"--tokenizer {path}: no such tokenizer (expected a tokenizer.json or a folder holding one)")


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (TOKENIZER_JSON, "tokenizer.model", "vocab.json", "vocab.txt"))
