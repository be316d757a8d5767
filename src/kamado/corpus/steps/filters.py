"""Document filters: each measures numbers about a text, then decides from them alone.

The reason a filter gives starts with a short code (``low_hiragana: 0.05 < 0.2``); stats.json counts
rejections per code. Character statistics come from one numpy pass over the code points
(:mod:`kamado.corpus.text.ja`); word lists are matched with a vectorized bigram-prefix table (pyahocorasick
measured ~300 ns/char on the 1,700-word lists here, this ~50); n-gram repetition is computed
with vectorized rolling hashes. Nothing here runs a morphological analyser.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from kamado.corpus.steps.base import Analysis, Env, Filter, StepParams, fmt, load_list, register
from kamado.corpus.text import ja


# ---------------------------------------------------------------------------------------------- length
class LengthParams(StepParams):
    min_chars: int = 0
    max_chars: int | None = None


@register("length")
class Length(Filter):
    """Document length in characters (put a ``max_chars`` guard first so a huge document costs nothing)."""

    Params = LengthParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        return {"chars": len(a.text)}

    def decide(self, m: dict[str, Any]) -> str | None:
        p = self.p
        if m["chars"] < p.min_chars:
            return f"too_short: {m['chars']} chars < {p.min_chars}"
        if p.max_chars is not None and m["chars"] > p.max_chars:
            return f"too_long: {m['chars']} chars > {p.max_chars}"
        return None


# -------------------------------------------------------------------------------------------- language
_LANGID: Any = None


def langid_classify(text: str) -> tuple[str, float]:
    """py3langid (packaged model, loaded once per process)."""
    global _LANGID
    if _LANGID is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _LANGID = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    lang, prob = _LANGID.classify(text)
    return str(lang), float(prob)


class LanguageParams(StepParams):
    accept: list[str] = ["ja"]
    min_score: float = 0.5
    sample_chars: int = 2000  # py3langid looks at this many characters from the start
    kana_share: float = 0.05  # kana among letters at least this: Japanese by script alone


@register("language")
class Language(Filter):
    """Language by script statistics (kana means Japanese), else the packaged py3langid model.

    Sets the document's ``lang``; later steps with ``lang: ja`` / ``lang: en`` apply by it.
    """

    Params = LanguageParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        c = a.counts
        kana = int(c[ja.HIRAGANA] + c[ja.KATAKANA])
        letters = int(sum(c[k] for k in ja.LETTER_CLASSES))
        if letters == 0:
            return {"lang": "und", "score": 0.0}
        if kana >= self.p.kana_share * letters:
            return {"lang": "ja", "score": round((kana + int(c[ja.KANJI])) / letters, 4)}
        if c[ja.HANGUL] > 0.3 * letters:
            return {"lang": "ko", "score": round(int(c[ja.HANGUL]) / letters, 4)}
        lang, prob = langid_classify(a.text[: self.p.sample_chars])
        if lang == "ja" and kana == 0:  # kanji-only text: Chinese far more often than Japanese
            lang = "zh"
        return {"lang": lang, "score": round(prob, 4)}

    def decide(self, m: dict[str, Any]) -> str | None:
        p = self.p
        if m["lang"] not in p.accept:
            return f"wrong_language: {m['lang']} (score {fmt(m['score'])}) not in {p.accept}"
        if m["score"] < p.min_score:
            return f"low_language_score: {m['lang']} {fmt(m['score'])} < {p.min_score}"
        return None


# ------------------------------------------------------------------------------------- script ratios
class ScriptParams(StepParams):
    min_japanese: float | None = 0.5  # hiragana+katakana+kanji+Japanese punctuation, of non-space chars
    min_hiragana: float | None = 0.2  # Swallow corpus: >= 0.2
    max_katakana: float | None = 0.5
    max_kanji: float | None = 0.75
    max_latin: float | None = None
    max_digits: float | None = 0.3


@register("script")
class Script(Filter):
    """Japanese character-class ratios (of non-space characters)."""

    Params = ScriptParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        c = a.counts
        n = max(a.n_nonspace, 1)
        jp = int(c[ja.HIRAGANA] + c[ja.KATAKANA] + c[ja.KANJI] + c[ja.JA_PUNCT])
        return {"japanese": round(jp / n, 4), "hiragana": round(int(c[ja.HIRAGANA]) / n, 4),
                "katakana": round(int(c[ja.KATAKANA]) / n, 4), "kanji": round(int(c[ja.KANJI]) / n, 4),
                "latin": round(int(c[ja.LATIN] + c[ja.LATIN_EXT]) / n, 4), "digits": round(int(c[ja.DIGIT]) / n, 4)}

    def decide(self, m: dict[str, Any]) -> str | None:
        p = self.p
        for key, code, lo, hi in (("japanese", "low_japanese", p.min_japanese, None),
                                  ("hiragana", "low_hiragana", p.min_hiragana, None),
                                  ("katakana", "high_katakana", None, p.max_katakana),
                                  ("kanji", "high_kanji", None, p.max_kanji),
                                  ("latin", "high_latin", None, p.max_latin),
                                  ("digits", "high_digits", None, p.max_digits)):
            if lo is not None and m[key] < lo:
                return f"{code}: {key} ratio {fmt(m[key])} < {lo}"
            if hi is not None and m[key] > hi:
                return f"{code}: {key} ratio {fmt(m[key])} > {hi}"
        return None


# ------------------------------------------------------------------------------------------ sentences


_TERMINATORS = np.zeros(0x10000, dtype=bool)
_TERMINATORS[[0x3002, 0x21, 0x3F, 0x0A, 0xFF01, 0xFF1F]] = True  # 。 ! ? newline ！ ？


class SentenceParams(StepParams):
    min_avg_chars: float | None = 10
    max_avg_chars: float | None = 250
    max_chars: int | None = 1000  # longest sentence
    max_ellipsis_lines: float | None = 0.3  # fraction of lines ending in …/...
    max_chars_per_kuten: float | None = 200  # "rare 句点": a long text with almost no 。
    kuten_min_chars: int = 400  # the 句点 rule applies from this length on


@register("sentences")
class Sentences(Filter):
    """Sentence lengths (split at 。!? and line ends), lines ending in an ellipsis, and rare 句点."""

    Params = SentenceParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        text = a.text
        c = a.cps
        stops = np.flatnonzero(_TERMINATORS[a.bmp])
        seg = np.diff(np.concatenate(([-1], stops, [c.size]))) - 1
        seg = seg[seg > 0]
        lens = seg.tolist() if seg.size < 64 else None
        lines = a.nonempty_lines
        n_lines = len(lines)
        ell = sum(1 for ln in lines if ln.endswith(_ELLIPSES))
        kuten = text.count("。")
        n_sent = int(seg.size)
        avg = float(seg.sum()) / max(n_sent, 1) if lens is None else sum(lens) / max(n_sent, 1)
        return {"sentences": n_sent, "avg_chars": round(avg, 2),
                "max_chars": int(seg.max()) if n_sent else 0, "ellipsis_lines": round(ell / max(n_lines, 1), 4),
                "kuten": kuten, "chars_per_kuten": round(a.n_nonspace / max(kuten, 1), 2),
                "chars": a.n_nonspace}

    def decide(self, m: dict[str, Any]) -> str | None:
        p = self.p
        if p.min_avg_chars is not None and m["avg_chars"] < p.min_avg_chars:
            return f"short_sentences: average {fmt(m['avg_chars'])} chars < {p.min_avg_chars}"
        if p.max_avg_chars is not None and m["avg_chars"] > p.max_avg_chars:
            return f"long_sentences: average {fmt(m['avg_chars'])} chars > {p.max_avg_chars}"
        if p.max_chars is not None and m["max_chars"] > p.max_chars:
            return f"very_long_sentence: {m['max_chars']} chars > {p.max_chars}"
        if p.max_ellipsis_lines is not None and m["ellipsis_lines"] > p.max_ellipsis_lines:
            return f"ellipsis_lines: {fmt(m['ellipsis_lines'])} > {p.max_ellipsis_lines}"
        if (p.max_chars_per_kuten is not None and m["chars"] >= p.kuten_min_chars
                and m["chars_per_kuten"] > p.max_chars_per_kuten):
            return f"rare_kuten: {fmt(m['chars_per_kuten'])} chars per 。 > {p.max_chars_per_kuten}"
        return None


# ----------------------------------------------------------------------------------------- repetition
_P = np.uint64(0x100000001B3)


class NgramHashes:
    """Polynomial hashes of all n-grams of ``ids``, built by composing shorter ones
    (h[a+b](i) = h[a](i) * P**b + h[b](i + a)), memoized, for all positions or for chosen ones."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self.L = ids.size
        self.cache: dict[int, np.ndarray] = {1: ids}

    @staticmethod
    def _pow(b: int) -> np.uint64:
        return np.uint64(pow(int(_P), b, 1 << 64))

    def _split(self, n: int) -> tuple[int, int]:
        known = [k for k in self.cache if k < n]
        a = max(known) if known else 1
        return (a, n - a) if n - a in self.cache or n - a <= a else (n // 2, n - n // 2)

    def full(self, n: int) -> np.ndarray:
        if n not in self.cache:
            m = self.L - n + 1
            a, b = self._split(n)
            self.cache[n] = self.full(a)[:m] * self._pow(b) + self.full(b)[a:a + m]
        return self.cache[n]

    def at(self, n: int, idx: np.ndarray) -> np.ndarray:
        if n in self.cache:
            return self.cache[n][idx]
        a, b = self._split(n)
        return self.at(a, idx) * self._pow(b) + self.at(b, idx + a)


_POS_BITS = np.uint64(20)
_POS_MASK = np.uint64((1 << 20) - 1)


def _groups(h: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort n-gram hashes once (hash in the high bits, position in the low 20 bits, so equal n-grams end
    up together in text order): returns (positions in sorted order, first-of-group flags, group sizes)."""
    s = np.sort((h << _POS_BITS) | pos.astype(np.uint64))
    hi = s >> _POS_BITS
    first = np.empty(s.size, dtype=bool)
    first[0] = True
    np.not_equal(hi[1:], hi[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, s.size))
    return (s & _POS_MASK).astype(np.int64), first, sizes


def _coverage(rep: np.ndarray, n: int, L: int, weights: np.ndarray | None) -> float:
    if rep.size == 0:
        return 0.0
    diff = np.bincount(rep, minlength=L + 1)[: L + 1] - np.bincount(rep + n, minlength=L + n + 1)[: L + 1]
    covered = np.cumsum(diff[:L]) > 0
    return float(covered.sum()) if weights is None else float(weights[covered].sum())


def top_ngram_fraction(ids: np.ndarray, weights: np.ndarray | None, n: int, hashes: NgramHashes | None = None) -> float:
    """Gopher: occurrences of the most frequent n-gram times its length, over the total."""
    L = ids.size
    if L < n:
        return 0.0
    m = L - n + 1
    hashes = hashes or NgramHashes(ids)
    if weights is None:  # characters: only the largest count is needed, no positions
        s = np.sort(hashes.full(n))
        b = np.flatnonzero(s[1:] != s[:-1])
        runs = np.diff(np.concatenate(([-1], b, [s.size - 1])))
        count = int(runs.max())
        return count * n / L if count > 1 else 0.0
    pos, first, sizes = _groups(hashes.full(n), np.arange(m))
    g = int(np.argmax(sizes))
    count = int(sizes[g])
    if count < 2:
        return 0.0
    if weights is None:
        return count * n / L
    p0 = int(pos[np.flatnonzero(first)[g]])
    return count * float(weights[p0:p0 + n].sum()) / float(weights.sum())


def dup_ngram_fractions(ids: np.ndarray, weights: np.ndarray | None, ns: list[int],
                        hashes: NgramHashes | None = None) -> dict[int, float]:
    """Gopher: the share of the text covered by repeated occurrences (not the first) of n-grams, for
    each n in ascending order. Every repeat of a longer n-gram starts where a shorter one repeats, so
    longer n only look at the positions the shorter n flagged (usually a small subset)."""
    L = ids.size
    out: dict[int, float] = {}
    total = float(L) if weights is None else float(weights.sum())
    cand: np.ndarray | None = None
    hashes = hashes or NgramHashes(ids)
    for n in sorted(ns):
        if L < n or total == 0 or (cand is not None and cand.size == 0):
            out[n] = 0.0
            cand = np.zeros(0, dtype=np.int64)
            continue
        m = L - n + 1
        at = np.arange(m) if cand is None else cand[cand < m]
        if at.size == 0:
            out[n] = 0.0
            cand = at
            continue
        key = ((hashes.full(n) if cand is None else hashes.at(n, at)) << _POS_BITS) | at.astype(np.uint64)
        srt = np.sort(key)
        hi = srt >> _POS_BITS
        same = hi[1:] == hi[:-1]  # element k+1 repeats element k's n-gram
        pos = (srt & _POS_MASK).astype(np.int64)
        rep = pos[1:][same]  # later occurrences (positions ascend within a group)
        if rep.size == 0:
            out[n] = 0.0
            cand = rep
            continue
        if weights is None:  # union of [r, r + n) over sorted starts: n + sum(min(gap, n))
            r = np.sort(rep)
            out[n] = (n + float(np.minimum(np.diff(r), n).sum())) / total
        else:
            out[n] = _coverage(rep, n, L, weights) / total
        multi = np.zeros(pos.size, dtype=bool)
        multi[1:] = same
        multi[:-1] |= same
        cand = np.sort(pos[multi])
    return out


class RepetitionParams(StepParams):
    unit: str = "char"  # "char" (Japanese) or "word" (whitespace-separated languages)
    max_dup_lines: float | None = 0.3
    max_dup_line_chars: float | None = 0.2
    max_dup_paragraphs: float | None = 0.3
    max_dup_paragraph_chars: float | None = 0.2
    top_ngram: dict[int, float] = {2: 0.2, 3: 0.18, 4: 0.16}
    dup_ngram: dict[int, float] = {10: 0.15, 15: 0.125, 20: 0.10}
    max_units: int = 20_000  # n-gram statistics look at this many units from the start


def _dup_fraction(items: list[str]) -> tuple[float, float]:
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for x in items:
        total_chars += len(x)
        if x in seen:
            dup += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup / max(len(items), 1), dup_chars / max(total_chars, 1)


_PARA = re.compile(r"\n\s*\n")


@register("repetition")
class Repetition(Filter):
    """Gopher repetition rules: duplicate lines/paragraphs, top n-gram and duplicate n-gram fractions;
    on characters for Japanese (``unit: char``), on words otherwise."""

    Params = RepetitionParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        p = self.p
        dl, dlc = _dup_fraction(a.nonempty_lines)
        if "\n\n" in a.text or "\n \n" in a.text:
            dp, dpc = _dup_fraction([x.strip() for x in _PARA.split(a.text) if x.strip()])
        else:
            dp = dpc = 0.0  # one paragraph
        m: dict[str, Any] = {"dup_lines": round(dl, 4), "dup_line_chars": round(dlc, 4),
                             "dup_paragraphs": round(dp, 4), "dup_paragraph_chars": round(dpc, 4)}
        if p.unit == "char":
            head = slice(0, 2 * p.max_units)  # spaces are few: no need to mask the whole document
            ids = a.cps[head][a.classes[head] != ja.SPACE][: p.max_units].astype(np.uint64)
            weights = None
        else:
            words = a.words[: p.max_units]
            vocab: dict[str, int] = {}
            ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), dtype=np.uint64, count=len(words))
            ids = ids * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1)
            weights = np.fromiter((len(w) for w in words), dtype=np.float64, count=len(words))
        if ids.size >= 1 << 20:
            ids = ids[: (1 << 20) - 1]
            weights = None if weights is None else weights[: ids.size]
        hashes = NgramHashes(ids)
        for n in sorted(p.top_ngram):
            m[f"top_{n}gram"] = round(top_ngram_fraction(ids, weights, n, hashes), 4)
        for n, v in dup_ngram_fractions(ids, weights, sorted(p.dup_ngram), hashes).items():
            m[f"dup_{n}gram"] = round(v, 4)
        return m

    def decide(self, m: dict[str, Any]) -> str | None:
        p = self.p
        for key, lim in (("dup_lines", p.max_dup_lines), ("dup_line_chars", p.max_dup_line_chars),
                         ("dup_paragraphs", p.max_dup_paragraphs),
                         ("dup_paragraph_chars", p.max_dup_paragraph_chars)):
            if lim is not None and m[key] > lim:
                return f"{key}: {fmt(m[key])} > {lim}"
        for n, lim in sorted(p.top_ngram.items()):
            if m.get(f"top_{n}gram", 0) > lim:
                return f"top_{n}gram: {fmt(m[f'top_{n}gram'])} > {lim}"
        for n, lim in sorted(p.dup_ngram.items()):
            if m.get(f"dup_{n}gram", 0) > lim:
                return f"dup_{n}gram: {fmt(m[f'dup_{n}gram'])} > {lim}"
        return None


# -------------------------------------------------------------------------------------------- symbols
_BULLETS = ("•", "・", "●", "○", "◆", "◇", "■", "□", "★", "☆", "▶", "►", "▼", "→", "-", "*", "※", "◎", "✓", "·")
_ELLIPSES = ("…", "...", "‥")


class SymbolParams(StepParams):
    max_symbols: float | None = 0.1  # symbol characters (★◆→…“”©, arrows, shapes), of non-space chars
    max_hash_ellipsis: float | None = 0.1  # Gopher: (# + … + ...) per word; per 10 chars for Japanese
    max_bullet_lines: float | None = 0.9
    unit: str = "char"


@register("symbols")
class Symbols(Filter):
    """Symbol and ellipsis ratios, and the share of lines that are bullets."""

    Params = SymbolParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        c = a.counts
        n = max(a.n_nonspace, 1)
        he = a.text.count("#") + a.text.count("…") + a.text.count("...")
        per = len(a.words) if self.p.unit == "word" else n / 10
        lines = a.nonempty_lines
        bullets = sum(1 for ln in lines if ln.startswith(_BULLETS))
        return {"symbols": round(int(c[ja.SYMBOL]) / n, 4), "hash_ellipsis": round(he / max(per, 1), 4),
                "bullet_lines": round(bullets / max(len(lines), 1), 4)}

    def decide(self, m: dict[str, Any]) -> str | None:
        p = self.p
        for key, lim in (("symbols", p.max_symbols), ("hash_ellipsis", p.max_hash_ellipsis),
                         ("bullet_lines", p.max_bullet_lines)):
            if lim is not None and m[key] > lim:
                return f"{key}: {fmt(m[key])} > {lim}"
        return None


# ------------------------------------------------------------------------------------------- ng words
class NgWordsParams(StepParams):
    lists: list[str] = []  # registry names (e.g. hojichar-adult-keywords-ja), data: paths or files
    words: list[str] = []
    max_ratio: float | None = 0.01  # matched characters / characters
    max_hits: int | None = None  # distinct matches allowed
    katakana_boundary: bool = True  # a katakana word must not touch katakana (アス ≠ アスパラガス)


_BITS = 18
_MUL = np.uint32(0x9E3779B1)


def _slots(keys: np.ndarray) -> np.ndarray:
    h = keys * _MUL  # wraps modulo 2**32
    h >>= np.uint32(32 - _BITS)
    return h


def _key2(c0: int, c1: int) -> int:
    return ((c0 << 16) | c1) & 0xFFFFFFFF


# Every matcher of a process owns one bit in these shared tables, so one gather per text serves all the
# NG-word steps of a chain (each then extracts its own bit).
_SHARED_T2 = np.zeros(1 << _BITS, dtype=np.uint8)
_SHARED_T1 = np.zeros(0x10000, dtype=np.uint8)
_SHARED_BITS = [0]


class _Lowered:
    """A text's code points with ASCII case folded and the hashed slot of every bigram (shared by the
    NG-word matchers of a chain; matches are verified against the original text)."""

    _mask: np.ndarray | None = None
    _mask1: np.ndarray | None = None

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Per position: the bits of the matchers whose words may start there (2+ chars / 1 char)."""
        if self._mask is None:
            self._mask = _SHARED_T2[self.slot2]  # positions < L - 1: matchers with words starting so
            self._mask1 = _SHARED_T1[self.cps]
        assert self._mask1 is not None
        return self._mask, self._mask1

    def __init__(self, text: str, cps: np.ndarray | None) -> None:
        if cps is None:
            cps = ja.codepoints(text)
        self.text = text  # original case: matches are verified case-insensitively for Latin words
        c = cps if cps.size == 0 or int(cps.max()) < 0x10000 else np.minimum(cps, 0xFFFF)
        upper = (c - np.uint32(65)) < np.uint32(26)  # ASCII A-Z (wrapping subtraction)
        c = c + (upper.astype(np.uint32) << np.uint32(5))  # folded to a-z for the prefix keys
        self.cps = c
        self.slot2 = _slots((c[:-1] << np.uint32(16)) | c[1:]) if c.size >= 2 else np.zeros(0, np.uint32)


def _exact2(c0: np.ndarray | int, c1: np.ndarray | int) -> Any:
    return (c0 << 16) | c1 if isinstance(c0, int) else (c0.astype(np.uint64) << np.uint64(16)) | c1


def _exact3(c0: np.ndarray | int, c1: np.ndarray | int, c2: np.ndarray | int) -> Any:
    if isinstance(c0, int):
        return (c0 << 32) | (c1 << 16) | c2
    return (c0.astype(np.uint64) << np.uint64(32)) | (c1.astype(np.uint64) << np.uint64(16)) | c2


def _in_sorted(x: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(x.size, dtype=bool)
    i = np.minimum(np.searchsorted(sorted_keys, x), sorted_keys.size - 1)
    return sorted_keys[i] == x


class WordMatcher:
    """Find list words in a text fast: numpy flags the positions whose first two characters may begin
    some word (a hashed bigram table, one gather shared by all matchers), checks the 2-/3-character
    prefixes there exactly (vectorized), and only the few real prefix hits are verified in Python.

    Katakana words match only when not touching other katakana (アス is not found in アスパラガス),
    Latin words only at word boundaries; matching is case-insensitive.
    """

    def __init__(self, words: list[str], katakana_boundary: bool = True) -> None:
        self.single: dict[str, list[str]] = {}
        self.by2: dict[int, list[str]] = {}  # exact 2-character key -> the 2-character word
        self.by3: dict[int, list[str]] = {}  # exact 3-character prefix key -> words, longest first
        self.info: dict[str, tuple[bool, bool, bool, bool]] = {}
        t2 = np.zeros(1 << _BITS, dtype=bool)
        single = np.zeros(0x10000, dtype=bool)
        for w in words:
            if not w or any(ord(ch) >= 0x10000 for ch in w[:3]):
                continue
            kb = katakana_boundary
            self.info[w] = (kb and ja.is_katakana(w[0]), kb and ja.is_katakana(w[-1]),
                            ja.is_word_char(w[0]), ja.is_word_char(w[-1]))
            o = [ord(ch) for ch in w[:3]]
            if len(w) == 1:
                single[o[0]] = True
                self.single.setdefault(w, []).append(w)
            elif len(w) == 2:
                self.by2.setdefault(_exact2(o[0], o[1]), []).append(w)
                t2[int(_slots(np.array([_key2(o[0], o[1])], np.uint32))[0])] = True
            else:
                self.by3.setdefault(_exact3(o[0], o[1], o[2]), []).append(w)
                t2[int(_slots(np.array([_key2(o[0], o[1])], np.uint32))[0])] = True  # first bigram
        for d in (self.by2, self.by3):
            for lst in d.values():
                lst.sort(key=len, reverse=True)
        self.keys2 = np.array(sorted(self.by2), dtype=np.uint64)
        self.keys3 = np.array(sorted(self.by3), dtype=np.uint64)
        self.t2, self.t1 = t2, single
        self.empty = not self.info
        self.cased = frozenset(w for w in self.info if w.upper() != w)  # words with letters that have case
        self.bit = 0
        if _SHARED_BITS[0] < 8:
            self.bit = np.uint8(1 << _SHARED_BITS[0])
            _SHARED_BITS[0] += 1
            _SHARED_T2[t2] |= self.bit
            _SHARED_T1[single] |= self.bit

    def _positions(self, lw: _Lowered) -> tuple[np.ndarray, np.ndarray]:
        """Positions that may start a 2+/1-character word of this matcher (a superset)."""
        if self.bit:
            m2, m1 = lw.masks()
            return np.flatnonzero(m2 & self.bit), (np.flatnonzero(m1 & self.bit) if self.single else m1[:0])
        ones = np.flatnonzero(self.t1[lw.cps]) if self.single else np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.t2[lw.slot2]), ones

    def find(self, text: str, cps: np.ndarray | None = None, lowered: _Lowered | None = None) -> list[tuple[int, int]]:
        """(start, end exclusive) of every accepted match (the longest accepted word per position)."""
        if self.empty or not text:
            return []
        lw = lowered or _Lowered(text, cps)
        text, c = lw.text, lw.cps
        idx, ones = self._positions(lw)
        cand: dict[int, list[str]] = {}
        if idx.size:
            cp = np.append(c, np.zeros(2, dtype=c.dtype))  # room for a 3-character key at the end
            c0, c1, c2 = cp[idx], cp[idx + 1], cp[idx + 2]
            k2, k3 = _exact2(c0, c1), _exact3(c0, c1, c2)
            ok2, ok3 = _in_sorted(k2, self.keys2), _in_sorted(k3, self.keys3)
            keep = ok2 | ok3
            by2, by3 = self.by2, self.by3
            for i, a2, a3, g2, g3 in zip(idx[keep].tolist(), k2[keep].tolist(), k3[keep].tolist(),
                                         ok2[keep].tolist(), ok3[keep].tolist(), strict=True):
                lst = list(by3[a3]) if g3 else []
                if g2:
                    lst += by2[a2]
                cand[i] = lst
        for i in ones.tolist():
            cand.setdefault(i, []).extend(self.single.get(text[i].lower(), []))
        out: list[tuple[int, int]] = []
        n = len(text)
        cased = self.cased
        for i in sorted(cand):
            for w in cand[i]:
                if w in cased:
                    if text[i:i + len(w)].lower() != w:
                        continue
                elif len(w) > 2 and not text.startswith(w, i):
                    continue
                end = i + len(w)
                kata_s, kata_e, word_s, word_e = self.info[w]
                if i > 0:
                    prev = text[i - 1]
                    if (kata_s and ja.is_katakana(prev)) or (word_s and ja.is_word_char(prev)):
                        continue
                if end < n:
                    nxt = text[end]
                    if (kata_e and ja.is_katakana(nxt)) or (word_e and ja.is_word_char(nxt)):
                        continue
                out.append((i, end))
                break
        return out


def covered_chars(spans: list[tuple[int, int]]) -> int:
    """Characters covered by the union of spans."""
    total = 0
    reach = -1
    for s, e in sorted(spans):
        if e > reach:
            total += e - max(s, reach)
            reach = e
    return total


@register("ng_words")
class NgWords(Filter):
    """NG-word ratio (characters inside list words / characters) and hit count."""

    Params = NgWordsParams

    def __init__(self, name: str, params: NgWordsParams, env: Env) -> None:
        super().__init__(name, params, env)
        from kamado.corpus.text.normalize import normalize

        words = list(dict.fromkeys([normalize(w).lower() for w in params.words]
                                   + [w.lower() for w in load_list(env, params.lists)]))
        # entries that NFKC turns into a lone ASCII character (①→1) would match everywhere: drop them
        words = [w for w in words if not (len(w) == 1 and w.isascii())]
        self.matcher = WordMatcher(words, params.katakana_boundary)

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        lw = a.__dict__.get("_lowered")
        if lw is None:
            lw = a.__dict__["_lowered"] = _Lowered(a.text, a.cps)
        spans = self.matcher.find(a.text, lowered=lw)
        if not spans:
            return {"hits": 0, "ratio": 0.0}
        return {"hits": len(spans), "ratio": round(covered_chars(spans) / max(len(a.text), 1), 5)}

    def decide(self, m: dict[str, Any]) -> str | None:
        p = self.p
        if p.max_hits is not None and m["hits"] > p.max_hits:
            return f"ng_words: {m['hits']} hits > {p.max_hits}"
        if p.max_ratio is not None and m["ratio"] > p.max_ratio:
            return f"ng_words: ratio {fmt(m['ratio'])} > {p.max_ratio}"
        return None


# ------------------------------------------------------------------------------ English word quality
_STOP = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
_ALPHA = re.compile(r"[^\W\d_]")


class WordsParams(StepParams):
    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_len: float | None = 3
    max_mean_word_len: float | None = 10
    min_alpha_words: float | None = 0.8
    min_stop_words: int | None = 2


@register("words")
class Words(Filter):
    """Gopher quality rules for whitespace-separated languages: word count, mean word length,
    words with a letter, stop words."""

    Params = WordsParams

    def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
        words = a.words
        n = len(words)
        alpha = sum(1 for w in words if _ALPHA.search(w))
        stop = sum(1 for w in words if w.lower() in _STOP)
        mean = sum(len(w) for w in words) / max(n, 1)
        return {"words": n, "mean_word_len": round(mean, 3), "alpha_words": round(alpha / max(n, 1), 4),
                "stop_words": stop}

    def decide(self, m: dict[str, Any]) -> str | None:
        p = self.p
        checks = (("words", "few_words", p.min_words, None), ("words", "many_words", None, p.max_words),
                  ("mean_word_len", "short_words", p.min_mean_word_len, None),
                  ("mean_word_len", "long_words", None, p.max_mean_word_len),
                  ("alpha_words", "few_alpha_words", p.min_alpha_words, None),
                  ("stop_words", "few_stop_words", p.min_stop_words, None))
        for key, code, lo, hi in checks:
            if lo is not None and m[key] < lo:
                return f"{code}: {key} {fmt(m[key])} < {lo}"
            if hi is not None and m[key] > hi:
                return f"{code}: {key} {fmt(m[key])} > {hi}"
        return None
