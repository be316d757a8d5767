"""SentencePiece tokenizers trained on the ja/en corpus and exported as Hugging Face tokenizer folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load(path: str | Path) -> Any:
    """The Hugging Face tokenizer of a tokenizer folder (``AutoTokenizer``, offline)."""
    from kamado.tokenizer.export import load as _load

    return _load(path)
