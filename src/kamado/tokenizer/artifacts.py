"""The tokenizer stage's artifact folder: a Hugging Face tokenizer folder plus kamado's statistics.

Layout::

    tokenizer.model, tokenizer_config.json, ...   the HF tokenizer (SentencePiece inside)
    kamado_tokenizer.json                         sample, weights, config and held-out statistics
    manifest.json                                 counts (:class:`TokenizerCounts`)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamado.stage import artifact_dir

INFO = "kamado_tokenizer.json"
_SCALARS = ("vocab_size", "train_s", "model_type", "normal_form", "sample_chars", "sample_lines", "read_errors",
            "sample_s", "stats_s", "sp_model", "base_vocab_size", "added_pieces")
_PER_LANG = ("chars_per_token", "byte_fallback_rate", "unk_rate", "heldout_chars", "base_chars_per_token")


@dataclass
class TokenizerCounts:
    """The tokenizer stage's manifest counts: size, timings, and held-out statistics per language."""

    vocab_size: int = 0
    model_type: str = ""
    normal_form: str = "identity"  # the normalisation the tokenizer applies (kamado.tokenizer.normal)
    sample_chars: int = 0
    sample_lines: int = 0
    read_errors: int = 0
    train_s: float = 0.0
    sample_s: float = 0.0
    stats_s: float = 0.0
    sp_model: str = "tokenizer.model"
    chars_per_token: dict[str, float] = field(default_factory=dict)  # per language, on held-out text
    byte_fallback_rate: dict[str, float] = field(default_factory=dict)
    unk_rate: dict[str, float] = field(default_factory=dict)
    heldout_chars: dict[str, int] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # lang, weight, sample/available chars
    # an extended tokenizer (tokenizer.extend): the base's size, the pieces appended, the base's chars/token
    base_vocab_size: int | None = None
    added_pieces: int | None = None
    base_chars_per_token: dict[str, float] = field(default_factory=dict)

    def to_counts(self) -> dict[str, Any]:
        """The flat manifest form (``chars_per_token_ja``, ...)."""
        out: dict[str, Any] = {"vocab_size": self.vocab_size}
        out |= {f"chars_per_token_{lg}": v for lg, v in self.chars_per_token.items()}
        out |= {"train_s": self.train_s, "model_type": self.model_type, "normal_form": self.normal_form,
                "sample_chars": self.sample_chars,
                "sample_lines": self.sample_lines}
        for lg in self.byte_fallback_rate:
            out |= {f"byte_fallback_rate_{lg}": self.byte_fallback_rate[lg], f"unk_rate_{lg}": self.unk_rate.get(lg),
                    f"heldout_chars_{lg}": self.heldout_chars.get(lg)}
        out |= {"read_errors": self.read_errors, "sample_s": self.sample_s, "stats_s": self.stats_s,
                "sp_model": self.sp_model}
        if self.base_vocab_size is not None:
            out |= {"base_vocab_size": self.base_vocab_size, "added_pieces": self.added_pieces}
            out |= {f"base_chars_per_token_{lg}": v for lg, v in self.base_chars_per_token.items()}
        out["sources"] = self.sources
        return out

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> TokenizerCounts:
        """Read the flat form back (missing values keep their defaults; a nested ``chars_per_token``
        mapping of older folders is accepted too)."""
        c = cls()
        for k in _SCALARS:
            if counts.get(k) is not None:
                setattr(c, k, counts[k])
        for k, v in counts.items():
            for p in _PER_LANG:
                if k.startswith(p + "_") and v is not None:
                    getattr(c, p)[k[len(p) + 1:]] = v
                elif k == p and isinstance(v, dict):
                    getattr(c, p).update(v)
        if isinstance(counts.get("sources"), dict):
            c.sources = dict(counts["sources"])
        return c


@dataclass
class TokenizerArtifact:
    """A tokenizer stage folder (an HF tokenizer folder), its statistics and manifest counts."""

    path: Path
    counts: TokenizerCounts
    raw_counts: dict[str, Any]  # the manifest counts as written
    info: dict[str, Any]  # kamado_tokenizer.json ({} for folders not made by kamado)

    @classmethod
    def open(cls, path: Path | str) -> TokenizerArtifact:
        """Read a tokenizer folder; a missing folder or one without tokenizer files is a clear error."""
        p, counts = artifact_dir(path, "tokenizer", ("tokenizer_config.json", "tokenizer.model", "tokenizer.json"))
        try:
            info = json.loads((p / INFO).read_text(encoding="utf-8")) if (p / INFO).is_file() else {}
        except (OSError, json.JSONDecodeError):
            info = {}
        return cls(p, TokenizerCounts.from_counts(counts), counts, info if isinstance(info, dict) else {})

    def hf_config(self) -> dict[str, Any]:
        """``tokenizer_config.json`` ({} when absent or unreadable)."""
        try:
            d = json.loads((self.path / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return d if isinstance(d, dict) else {}
