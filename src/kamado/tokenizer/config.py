"""Config of the tokenizer stage."""

from __future__ import annotations

from typing import Literal

from kamado.config import StrictModel


class TokenizerConfig(StrictModel):
    """SentencePiece training on a mixture-weighted sample of the clean corpus."""

    vocab_size: int = 8000
    model_type: Literal["unigram", "bpe"] = "unigram"
    sample_chars: int = 20_000_000  # characters drawn from the corpus for training
    weights: dict[str, float] | None = None  # per-source sampling weights; None = by size
    character_coverage: float = 0.9995
    byte_fallback: bool = True
    split_digits: bool = True
