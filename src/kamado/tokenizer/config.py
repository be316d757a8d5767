"""Config of the tokenizer stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kamado.config import StrictModel


class ExtendConfig(StrictModel):
    """Extend an existing SentencePiece tokenizer instead of training one (kamado.tokenizer.extend)."""

    base: str  # the base tokenizer: a folder holding tokenizer.model, or a .model file (relative: to the recipe)
    add: int = Field(ge=0, le=1 << 20)  # exactly this many new pieces, learnt on the tokenizer text (0: the base as is)
    # the language whose lines of the tokenizer text the new pieces are learnt on (null: all of it)
    lang: str | None = "ja"


class TokenizerConfig(StrictModel):
    """SentencePiece training on a mixture-weighted sample of the clean corpus."""

    vocab_size: int = Field(8000, ge=256, le=1 << 20, description="Vocabulary size in pieces (256 to 1048576: "
                            "byte fallback needs a piece per byte).")
    model_type: Literal["unigram", "bpe"] = Field("unigram", description="SentencePiece model: unigram or bpe.")
    sample_chars: int = Field(20_000_000, ge=1, description="Characters drawn from the corpus for training "
                              "(1 or more).")
    weights: dict[str, float] | None = Field(None, description="Sampling weights per source or language, e.g. "
                                             "ja: 0.6, en: 0.4 (0 or more, one positive; unset: by size).")
    character_coverage: float = 0.9995
    byte_fallback: bool = True
    split_digits: bool = True
    heldout_every: int = 50  # one line in N (by hash) is held out of training, for chars/token statistics
    heldout_chars: int = 300_000  # at most this many held-out characters per language
    max_sentences: int = 0  # SentencePiece input_sentence_size (0: every sampled line)
    seed_pieces: int = 1_000_000  # SentencePiece seed_sentencepiece_size
    sub_iterations: int = 1  # SentencePiece num_sub_iterations (its default 2 doubles the time, same chars/token)
    num_threads: int = 0  # 0: all cores (at most 16)
    # the normalisation the tokenizer applies (kamado.tokenizer.normal)
    normal_form: Literal["auto", "identity", "nfkc", "nfkc_ja"] = Field(
        "auto", description="Normalisation the tokenizer applies: auto (the corpus chains' own; identity for "
        "inputs that are not a corpus stage's output), identity, nfkc, nfkc_ja.")
    # append `add` pieces to `base` (its ids, scores, specials and normaliser kept); vocab_size, model_type and
    # normal_form then come from the base
    extend: ExtendConfig | None = None

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            bad = {k: w for k, w in v.items() if w < 0}
            if bad:
                raise ValueError(f"weights must be >= 0 (got {bad})")
            if not any(w > 0 for w in v.values()):
                raise ValueError("at least one weight must be positive")
        return v
