"""HojiChar's core Japanese document filters, re-implemented exactly and vectorized (the ``hojichar-compat``
chain), and usable in any chain.

Every step makes the decision of the HojiChar 0.18.1 filter it names on the same (NFKC) text:

=====================  =============================================  ==========================================
step type              HojiChar filter                                rejects when
=====================  =============================================  ==========================================
``nfkc``               ``DocumentNormalizer``                         (cleaner) plain NFKC, nothing else
``kana_start``         ``AcceptJapanese``                             no hiragana/katakana in the first 50 chars
``keywords``           ``DiscardAdultContentJa`` … ``DiscardAds``     list words found (``re.findall`` count of
                                                                      the words' alternation, in list order)
                                                                      above ``max_hits`` (0: any hit)
``bbs``                ``DiscardBBSComments``                         BBS pattern found more than 14 times
``kuten``              ``DiscardRareKuten``                           fewer 。 than chars / 100
``char_repetition``    ``CharRepetitionRatioFilter``                  top sqrt(#distinct) 5-grams cover >= 0.33
``char_run``           ``SingleCharacterRepetitionFilter``            one character repeated 200 times in a row
``ending_ellipsis``    ``DiscardTooManyEndingEllipsis``               lines ending in ... / … above 0.7
``mask_pii_hojichar``  ``MaskPersonalInformation``                    (cleaner) phone/e-mail partly masked
=====================  =============================================  ==========================================

HojiChar's filters are pure predicates of the normalized text, so a chain may order them by cost (the kept
set does not change; only which step is named in ``rejected_by``). Speed comes from: NFKC only over the runs
of characters it can change (:func:`kamado.corpus.text.normalize.nfkc`); word lists found by a hashed bigram table
gathered with numpy, with Python verifying only the candidate positions (HojiChar: one regular expression
of 1,472 alternatives per document); counts bounded by cheap ``str.count`` sums before any regular
expression runs; 5-gram frequencies from one sort of 64-bit rolling hashes (HojiChar: a Python dict).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from kamado.corpus.steps.base import Analysis, Cleaner, Env, Filter, StepParams, fmt, register
from kamado.corpus.text.normalize import nfkc


def load_raw_list(env: Env, names: list[str]) -> list[str]:
    """List words exactly as HojiChar reads them: split at newlines, empty lines dropped, then stripped;
    no normalization, no comments, list order kept (it decides which alternative a regex matches)."""
    out: list[str] = []
    for name in names:
        raw = env.resolve(name).read_text(encoding="utf-8").split("\n")
        out += [w.strip() for w in raw if len(w) != 0]
    return out


# -------------------------------------------------------------------------------------------- cleaners
@register("nfkc")
class Nfkc(Cleaner):
    """Unicode NFKC of the whole text, exactly ``unicodedata.normalize("NFKC", text)`` (no other change)."""

    def rewrite(self, text: str) -> str:
        return nfkc(text)


_PHONE = re.compile(r"((0|\+\d{1,3}[- ]?)(\d{2}[- ]?\d{4}[- ]?|\d[- ]?\d{4}[- ]?|\d{2}[- ]?\d{3}[- ]?|\d{3}[- ]?\d{2}[- ]?"
                    r"|\d{4}[- ]?\d{1}[- ]?))\d{4}")
_MAIL = re.compile(r"[a-zA-Z0-9!#$%&'*+\-/=?^_`{|}~.]+@[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+(\.[A-Za-z0-9\-]+)")


@register("mask_pii_hojichar")
class MaskPiiHojichar(Cleaner):
    """HojiChar's ``MaskPersonalInformation``: the last 4 digits of phone numbers become XXXX, e-mail
    addresses xxxx@yyy.TLD (same expressions; skipped when the text has no digit 0 / no @)."""

    def rewrite(self, text: str) -> str:
        if "0" in text or "+" in text:
            text = _PHONE.sub(r"\1XXXX", text)
        if "@" in text:
            text = _MAIL.sub(r"xxxx@yyy\1", text)
        return text


# ----------------------------------------------------------------------------------------- kana start
_KANA = re.compile(r"[ぁ-んァ-ン]")


class KanaStartParams(StepParams):
    lookup_chars: int = 50


@register("kana_start")
class KanaStart(Filter):
    """Japanese iff a hiragana or katakana (ぁ-ん, ァ-ン) occurs in the first ``lookup_chars`` characters."""

    Params = KanaStartParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        return {"kana": _KANA.search(a.text[: self.p.lookup_chars]) is not None}

    def decide(self, m: dict[str, Any]) -> str | None:
        return None if m["kana"] else f"no_kana_start: no kana in the first {self.p.lookup_chars} chars"


# ---------------------------------------------------------------------------------------------- kuten
class KutenParams(StepParams):
    max_chars_per_kuten: float = 100


@register("kuten")
class Kuten(Filter):
    """Rare 句点: fewer 。 than ``characters / max_chars_per_kuten`` (all characters, any length)."""

    Params = KutenParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        return {"kuten": a.text.count("。"), "chars": len(a.text)}

    def decide(self, m: dict[str, Any]) -> str | None:
        if m["kuten"] < m["chars"] / self.p.max_chars_per_kuten:
            return f"rare_kuten: {m['kuten']} 。 in {m['chars']} chars (< 1 per {fmt(self.p.max_chars_per_kuten)})"
        return None


# ------------------------------------------------------------------------------------ ending ellipsis
class EllipsisParams(StepParams):
    max_ratio: float = 0.7


@register("ending_ellipsis")
class EndingEllipsis(Filter):
    """Lines ending in ``...`` or ``…`` (followed by a newline) per newline (at least 1)."""

    Params = EllipsisParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        t = a.text
        n = t.count("...\n") + t.count("…\n")  # = len(re.findall(r"(\.{3}|…)\n")): matches cannot overlap
        return {"ellipsis_ratio": round(n / max(t.count("\n"), 1), 6)}

    def decide(self, m: dict[str, Any]) -> str | None:
        if m["ellipsis_ratio"] > self.p.max_ratio:
            return f"ending_ellipsis: {fmt(m['ellipsis_ratio'])} > {self.p.max_ratio}"
        return None


# ------------------------------------------------------------------------------------------- char run
class CharRunParams(StepParams):
    min_run: int = 200


@register("char_run")
class CharRun(Filter):
    """The longest run of one repeated character; rejects at ``min_run`` or more."""

    Params = CharRunParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        c = a.cps
        if c.size < self.p.min_run:
            return {"max_run": 1 if c.size else 0}
        b = np.flatnonzero(c[1:] != c[:-1])
        if b.size == 0:
            return {"max_run": int(c.size)}
        return {"max_run": int(max(b[0] + 1, c.size - 1 - b[-1], int(np.diff(b).max()) if b.size > 1 else 0))}

    def decide(self, m: dict[str, Any]) -> str | None:
        if m["max_run"] >= self.p.min_run:
            return f"char_run: {m['max_run']} >= {self.p.min_run}"
        return None


# ----------------------------------------------------------------------------------- char repetition
class CharRepetitionParams(StepParams):
    ngram: int = 5
    threshold: float = 0.33


_HP = np.uint64(0x9E3779B97F4A7C15)


def char_ngram_counts(cps: np.ndarray, n: int) -> np.ndarray:
    """How often each distinct character n-gram occurs (64-bit polynomial hashes, one sort)."""
    m = cps.size - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    c = cps.astype(np.uint64)
    h = c[:m].copy()
    for j in range(1, n):
        h *= _HP
        h += c[j:j + m]
    h.sort()
    edges = np.flatnonzero(h[1:] != h[:-1])
    return np.diff(np.concatenate(([-1], edges, [m - 1])))


def char_repetition_ratio(cps: np.ndarray, n: int = 5) -> float:
    """BigScience/HojiChar character repetition: the share of all n-grams taken by the
    ``min(int(sqrt(#distinct)), #distinct - #singletons)`` most frequent distinct n-grams."""
    counts = char_ngram_counts(cps, n)
    u = counts.size
    if u == 0:
        return 0.0
    k = min(int(np.sqrt(u)), u - int(np.count_nonzero(counts == 1)))
    if k <= 0:
        return 0.0
    top = np.partition(counts, u - k)[u - k:]
    return float(top.sum()) / float(counts.sum())


@register("char_repetition")
class CharRepetition(Filter):
    """Character n-gram repetition ratio (HojiChar ``CharRepetitionRatioFilter``); rejects at >= threshold."""

    Params = CharRepetitionParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        return {"char_rep": round(char_repetition_ratio(a.cps, self.p.ngram), 6)}

    def decide(self, m: dict[str, Any]) -> str | None:
        if m["char_rep"] >= self.p.threshold:
            return f"char_repetition: {fmt(m['char_rep'])} >= {self.p.threshold}"
        return None


# ------------------------------------------------------------------------------------------- keywords
_SLOT_BITS = 16  # a 64 KB table stays in cache (the gather is the cost; false hits are cut next)
_MUL_A = np.uint32(0x9E3779B1)
_MUL_B = np.uint32(0x85EBCA77)


def _slot(c0: np.ndarray | int, c1: np.ndarray | int) -> Any:
    """Hashed table slot of a character bigram (uint32 arithmetic, wrapping)."""
    with np.errstate(over="ignore"):
        h = (np.asarray(c0, dtype=np.uint32) * _MUL_A) ^ np.asarray(c1, dtype=np.uint32)
        return (h * _MUL_B) >> np.uint32(32 - _SLOT_BITS)


def _bigram_slots(a: Analysis) -> np.ndarray:
    """Hashed slot of every character bigram of the text (cached on the analysis for all list steps)."""
    s = a.__dict__.get("_bigram_slots")
    if s is None:
        c = a.cps
        s = _slot(c[:-1], c[1:]) if c.size > 1 else np.zeros(0, np.uint32)
        a.__dict__["_bigram_slots"] = s
    return s


_EXACT_BITS = 20


def _slot3(c0: np.ndarray | int, c1: np.ndarray | int, c2: np.ndarray | int) -> Any:
    """Second-stage slot of a 2- or 3-character prefix (c2 = 0 for a 2-character word)."""
    with np.errstate(over="ignore"):
        h = (np.asarray(c0, dtype=np.uint32) * _MUL_B) ^ np.asarray(c1, dtype=np.uint32)
        h = (h * _MUL_A) ^ np.asarray(c2, dtype=np.uint32)
        return (h * _MUL_B) >> np.uint32(32 - _EXACT_BITS)


class LiteralMatcher:
    """Count the matches ``re.findall("|".join(map(re.escape, words)), text)`` would return, exactly:
    leftmost, the first word in list order at a position, non-overlapping. numpy finds the positions whose
    first two characters may begin a word (a 64 KB hashed bigram table), keeps those whose 2-character key
    (2-character words) or 3-character prefix (longer words) hits a second, larger hashed table, adds the
    one-character words' positions; only those few are checked in Python."""

    def __init__(self, words: list[str]) -> None:
        self.at: dict[str, list[tuple[int, str]]] = {}  # first 2 chars (or the 1-char word) -> (order, word)
        table = np.zeros(1 << _SLOT_BITS, dtype=bool)
        single = np.zeros(0x110000, dtype=bool)
        exact2 = np.zeros(1 << _EXACT_BITS, dtype=bool)
        exact3 = np.zeros(1 << _EXACT_BITS, dtype=bool)
        for i, w in enumerate(dict.fromkeys(words)):
            if not w:
                raise ValueError("an empty word would match everywhere")
            self.at.setdefault(w[:2], []).append((i, w))
            if len(w) == 1:
                single[ord(w)] = True
                continue
            table[int(_slot(ord(w[0]), ord(w[1])))] = True
            if len(w) == 2:
                exact2[int(_slot3(ord(w[0]), ord(w[1]), 0))] = True
            else:
                exact3[int(_slot3(ord(w[0]), ord(w[1]), ord(w[2])))] = True
        self.table = table
        self.exact2 = exact2 if exact2.any() else None
        self.exact3 = exact3 if exact3.any() else None
        self.singles = "".join(chr(c) for c in np.flatnonzero(single))
        self.single = single if self.singles else None

    def positions(self, a: Analysis) -> np.ndarray:
        """Sorted positions where some word may match (a superset of the match starts)."""
        pos = np.flatnonzero(self.table[_bigram_slots(a)])
        if pos.size:
            c = a.cps
            c0, c1 = c[pos], c[pos + 1]
            ok = self.exact2[_slot3(c0, c1, 0)] if self.exact2 is not None else np.zeros(pos.size, dtype=bool)
            if self.exact3 is not None:
                c2 = c[np.minimum(pos + 2, c.size - 1)]
                ok |= self.exact3[_slot3(c0, c1, c2)] & (pos + 2 < c.size)
            pos = pos[ok]
        if self.single is not None and any(ch in a.text for ch in self.singles):
            pos = np.union1d(pos, np.flatnonzero(self.single[a.cps]))
        return pos

    def count(self, a: Analysis, stop_after: int | None = None) -> tuple[int, str | None]:
        """(matches, the first matched word), counting stopped once ``stop_after`` is exceeded."""
        text = a.text
        if not text:
            return 0, None
        pos = self.positions(a)
        if pos.size == 0:
            return 0, None
        at = self.at
        n, end, first = 0, -1, None
        for p in pos.tolist():
            if p < end:
                continue
            k2 = text[p:p + 2]
            c2 = at.get(k2) if len(k2) == 2 else None
            c1 = at.get(text[p])
            cands = c2 if c1 is None else c1 if c2 is None else sorted(c1 + c2)  # list order decides
            if cands is None:
                continue
            for _, w in cands:
                if text.startswith(w, p):
                    n += 1
                    end = p + len(w)
                    first = first or w
                    break
            if stop_after is not None and n > stop_after:
                break
        return n, first


class KeywordsParams(StepParams):
    lists: list[str] = []  # registry names, data: paths or files (read raw, HojiChar's way)
    words: list[str] = []
    max_hits: int = 0  # more matches than this reject (0: any match)


@register("keywords")
class Keywords(Filter):
    """Exact, case-sensitive list words (HojiChar ``NgWordsFilterJa`` / ``DiscardAds``): matches counted like
    ``re.findall`` of the list's alternation (counting stops past ``max_hits``)."""

    Params = KeywordsParams

    def __init__(self, name: str, params: KeywordsParams, env: Env) -> None:
        super().__init__(name, params, env)
        self.matcher = LiteralMatcher(load_raw_list(env, params.lists) + list(params.words))

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        n, first = self.matcher.count(a, self.p.max_hits)
        return {"hits": n, "first": first} if n else {"hits": 0}

    def decide(self, m: dict[str, Any]) -> str | None:
        lim = self.p.max_hits
        if m["hits"] > lim:
            if lim == 0:
                return f"keywords: {m.get('first')!r} found"
            return f"keywords: {m['hits']}+ hits > {lim} (first {m.get('first')!r})"
        return None


# ------------------------------------------------------------------------------------------------ BBS
BBS_PATTERN = (r"\d{4}[年\.\-\/][\ ]*\d{1,2}[月\.\-\/][\ ]*\d{1,2}[日]*|コメント|SOLD OUT|レビュー|投稿|ページ"
               r"|\([月火水木金土日]\)|質問|\d+話|楽天市場|-")
# Every match holds a character no other match holds: a date its first separator (年 . - /), the day
# pattern its "(", \d+話 its 話, a word itself; so these counts bound the number of matches from above.
_BBS_WITNESSES = ("年", ".", "-", "/", "(", "話", "コメント", "SOLD OUT", "レビュー", "投稿", "ページ", "質問", "楽天市場")


class BbsParams(StepParams):
    max_hits: int = 14


@register("bbs")
class Bbs(Filter):
    """HojiChar ``DiscardBBSComments``: its pattern (dates, コメント, 投稿, (月), 12話, "-", …) found more than
    ``max_hits`` times. A ``str.count`` bound decides most documents; the expression runs (and stops
    counting past ``max_hits``) only when the bound is above it."""

    Params = BbsParams
    _pat = re.compile(BBS_PATTERN)

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        t = a.text
        bound = sum(t.count(w) for w in _BBS_WITNESSES)
        lim = self.p.max_hits
        if bound <= lim:
            return {"hits": bound, "bound": True}
        n = 0
        for _ in self._pat.finditer(t):
            n += 1
            if n > lim:
                break
        return {"hits": n, "bound": False}

    def decide(self, m: dict[str, Any]) -> str | None:
        if m["hits"] > self.p.max_hits:
            return f"bbs: {m['hits']}+ pattern hits > {self.p.max_hits}"
        return None
