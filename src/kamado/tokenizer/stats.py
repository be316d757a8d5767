"""How many characters a token buys, and how often a tokenizer falls back to bytes or ``<unk>``, per language."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kamado.tokenizer.text import encode_text

_BYTE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def measure_tokenizer(tok: Any, by_lang: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Per language: chars, tokens, chars/token, byte-fallback and unknown-token rates."""
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    byte_ids = {i for i, t in enumerate(vocab) if t and _BYTE.match(t)}
    unk = tok.unk_token_id
    out: dict[str, dict[str, Any]] = {}
    for lang, texts in sorted(by_lang.items()):
        texts = [t for t in texts if t]
        if not texts:
            continue
        ids = encode_text(tok, texts)
        n = sum(len(x) for x in ids)
        chars = sum(len(t) for t in texts)
        nbyte = sum(1 for x in ids for i in x if i in byte_ids)
        nunk = sum(1 for x in ids for i in x if i == unk) if unk is not None else 0
        out[lang] = {"chars": chars, "tokens": n, "chars_per_token": chars / max(1, n),
                     "byte_fallback_rate": nbyte / max(1, n), "unk_rate": nunk / max(1, n), "docs": len(texts)}
    return out


def measure(tok_dir: Path | str, by_lang: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """:func:`measure_tokenizer` for a tokenizer folder."""
    from kamado.tokenizer.export import load

    return measure_tokenizer(load(tok_dir), by_lang)
