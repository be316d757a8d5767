"""The tokenizer's normal form: the corpus chain's character normalisation, applied by the tokenizer itself.

A model trained on NFKC-folded text must see folded text at evaluation and in ``kamado serve``/``chat``,
whatever the user types (``（１２３）`` and ``(123)``, ``ｶﾀｶﾅ`` and ``カタカナ``). SentencePiece is trained
with a custom normalisation rule (a TSV of character-sequence mappings, compiled into the model's
``precompiled_charsmap``) and the Hugging Face export carries the same charsmap as its ``Precompiled``
normaliser, so SentencePiece, ``AutoTokenizer``, lm-eval, eval, serve and chat share one normal form.

Forms:
- ``identity``: no change (chains without normalisation).
- ``nfkc``: Unicode NFKC (the ``nfkc`` step, HojiChar's ``DocumentNormalizer``).
- ``nfkc_ja``: the ``normalize`` step's character rules: line ends unified (``\\r\\n``, ``\\r``, U+2028/2029,
  NEL, VT, FF → ``\\n``), NFKC except ``…‥゛゜`` (:func:`kamado.corpus.text.normalize.nfkc_ja`), control and
  zero-width characters removed.

The rule maps every single character NFKC changes and every (base, mark) pair that NFKC composes, with the
compatibility variants of both (``ﾃﾞ`` → ``デ``, ``か゚``); SentencePiece applies it by longest match. What it
cannot express is left out and said here: compositions of three or more characters (a base with two
marks), and the corpus step's whitespace folding (runs of spaces, spaces around line breaks): those would
strip spaces that evaluation continuations start with, so spaces are kept as written.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

FORMS: tuple[str, ...] = ("identity", "nfkc", "nfkc_ja")
_NEWLINE = {"\r\n": "\n", "\r": "\n", "\u2028": "\n", "\u2029": "\n", "\x85": "\n", "\x0b": "\n", "\x0c": "\n"}


def resolve(configured: str, specs: list[Any]) -> str:
    """The normal form to train with: ``configured``, or for ``auto`` the one the inputs' corpus chains
    produced (``identity`` when none is known). Chains that disagree are an error naming the sources."""
    from kamado.config import KamadoError

    if configured != "auto":
        return configured
    by_form: dict[str, list[str]] = defaultdict(list)
    for sp in specs:
        if getattr(sp, "normal_form", None):
            by_form[sp.normal_form].append(sp.source or sp.label)
    if len(by_form) > 1:
        raise KamadoError("tokenizer: the corpus sources were normalised differently, so no one normal form fits "
                          "them all: " + "; ".join(f"{f}: {', '.join(srcs)}" for f, srcs in sorted(by_form.items()))
                          + " (give them chains with the same normalisation, or set tokenizer.normal_form)")
    return next(iter(by_form), "identity")


def _fold(form: str) -> Callable[[str], str]:
    """The corpus step's character fold of a form (``nfkc_ja`` or exact NFKC)."""
    from kamado.corpus.text.normalize import nfkc_ja

    return nfkc_ja if form == "nfkc_ja" else (lambda t: unicodedata.normalize("NFKC", t))


def _char_map(form: str) -> dict[str, str]:
    """Single characters the form changes (before compositions)."""
    from kamado.corpus.text.normalize import _CONTROL

    fold = _fold(form)
    out: dict[str, str] = {}
    for c in range(1, 0x110000):  # (U+0000 cannot be a key of SentencePiece's trie)
        if 0xD800 <= c < 0xE000:
            continue
        ch = chr(c)
        t = fold(ch)
        if form == "nfkc_ja":
            if ch in _NEWLINE:
                t = "\n"
            elif _CONTROL.fullmatch(ch):
                t = ""
            else:
                t = _CONTROL.sub("", t)
        if t != ch:
            out[ch] = t
    return out


@cache
def rules(form: str) -> tuple[tuple[str, str], ...]:
    """The (source, target) sequence mappings of a form, sorted (empty for ``identity``)."""
    if form not in FORMS:
        raise ValueError(f"unknown normal form {form!r} (one of {', '.join(FORMS)})")
    if form == "identity":
        return ()
    fold = _fold(form)
    single = _char_map(form)
    variants: dict[str, list[str]] = defaultdict(list)  # normal character -> characters that fold to it
    for src, dst in single.items():
        if len(dst) == 1:
            variants[dst].append(src)
    out = dict(single)
    if form == "nfkc_ja":
        out |= {k: v for k, v in _NEWLINE.items() if len(k) > 1}
    for c in range(0x110000):  # canonical pairs NFKC composes: every variant of the base with every mark variant
        d = unicodedata.decomposition(chr(c))
        if not d or d.startswith("<"):
            continue
        parts = d.split()
        if len(parts) != 2:
            continue
        base, mark = chr(int(parts[0], 16)), chr(int(parts[1], 16))
        for b in [base, *variants.get(base, [])]:
            for m in [mark, *variants.get(mark, [])]:
                pair = b + m
                if pair in out:
                    continue
                t = fold(pair)
                if t != single.get(b, b) + single.get(m, m):
                    out[pair] = t
    return tuple(sorted(out.items()))


def rule_tsv(form: str) -> str:
    """SentencePiece's ``normalization_rule_tsv`` text: hex code points of source, tab, of target."""
    def hexes(s: str) -> str:
        return " ".join(f"{ord(c):X}" for c in s)

    return "".join(f"{hexes(s)}\t{hexes(t)}\n" for s, t in rules(form))


def write_rule_tsv(form: str, path: Path) -> Path:
    """Write the form's rule TSV (SentencePiece reads it from a file)."""
    path.write_text(rule_tsv(form), encoding="ascii")
    return path


def apply(form: str, text: str) -> str:
    """``text`` in the form, the way the tokenizer folds it (longest match over :func:`rules`)."""
    if form == "identity" or not text:
        return text
    table = dict(rules(form))
    longest = max(len(s) for s in table)
    out: list[str] = []
    i = 0
    while i < len(text):
        for n in range(min(longest, len(text) - i), 0, -1):
            t = table.get(text[i:i + n])
            if t is not None:
                out.append(t)
                i += n
                break
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
