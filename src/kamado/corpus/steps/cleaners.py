"""Line and span cleaners: normalization, personal data, boilerplate lines, corpus-wide repeated lines."""

from __future__ import annotations

import bisect
import re
from typing import Literal

import numpy as np

from kamado.config import ConfigError
from kamado.corpus.steps.base import Cleaner, Env, StepParams, load_list, register
from kamado.corpus.text.normalize import normalize


class NormalizeParams(StepParams):
    nfkc: bool = True
    mojibake: bool = True
    control: bool = True
    whitespace: bool = True


@register("normalize")
class Normalize(Cleaner):
    """NFKC safe for Japanese, control characters, whitespace, mojibake repair."""

    Params = NormalizeParams

    def rewrite(self, text: str) -> str:
        p = self.p
        return normalize(text, p.nfkc, p.mojibake, p.control, p.whitespace)


Action = Literal["mask", "remove", "keep"]
EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
URL = re.compile(r"(?:https?|ftp)://[^\s<>\"'「」『』（）()、。]+|www\.[A-Za-z0-9\-]+\.[^\s<>\"'「」『』（）()、。]+")
# each alternative starts with a literal (fast scanning); the look-behinds sit after it
PHONE = re.compile(r"(?:0(?<![\d\-+]0)|\+81(?<![\d\-+]\+81)[- ]?)\d{1,4}[- ]\d{1,4}[- ]\d{3,4}(?![\d\-])"
                   r"|0(?<![\d\-+]0)[5789]0\d{8}(?!\d)|\((?<![\d\-+]\()0\d{1,4}\)\d{1,4}-\d{4}(?![\d\-])")


class PiiParams(StepParams):
    email: Action = "mask"
    url: Action = "remove"
    phone: Action = "mask"
    email_mask: str = "<EMAIL>"
    url_mask: str = "<URL>"
    phone_mask: str = "<PHONE>"


@register("pii")
class Pii(Cleaner):
    """E-mail addresses, URLs and phone numbers (Japanese and +81 formats): mask, remove or keep."""

    Params = PiiParams

    def __init__(self, name: str, params: PiiParams, env: Env) -> None:
        super().__init__(name, params, env)
        self.rules = []
        for pat, action, mask, need in ((EMAIL, params.email, params.email_mask, _has_at),
                                        (URL, params.url, params.url_mask, _has_url),
                                        (PHONE, params.phone, params.phone_mask, _has_phone_hint)):
            if action != "keep":
                self.rules.append((pat, mask if action == "mask" else "", need))

    def rewrite(self, text: str) -> str:
        for pat, repl, need in self.rules:
            if need(text):  # cheap pre-check before the regular expression
                text = pat.sub(repl, text)
        return text


_PHONE_HINT = re.compile(r"0[-\d ()]{6,16}")  # a literal first character: scans at memchr speed


def _has_phone_hint(text: str) -> bool:
    return "+81" in text or _PHONE_HINT.search(text) is not None


def _has_at(text: str) -> bool:
    return "@" in text


def _has_url(text: str) -> bool:
    return "://" in text or "www." in text


class BoilerplateParams(StepParams):
    lines: list[str] = []  # exact lines
    line_lists: list[str] = []  # files/registry names of exact lines
    prefixes: list[str] = []
    prefix_lists: list[str] = []
    suffixes: list[str] = []
    suffix_lists: list[str] = []
    patterns: list[str] = []  # regular expressions searched in lines of at most pattern_max_chars
    pattern_max_chars: int = 200
    keywords: list[str] = []  # a short line containing one of these is boilerplate (header/footer)
    keyword_lists: list[str] = []
    short_line_chars: int = 30  # what "short" means for prefixes/suffixes/keywords
    prefix_suffix_any_length: bool = False


@register("boilerplate_lines")
class BoilerplateLines(Cleaner):
    """Drop lines that are site furniture: exact lines, prefixes/suffixes/keywords on short lines, patterns."""

    Params = BoilerplateParams

    def __init__(self, name: str, params: BoilerplateParams, env: Env) -> None:
        super().__init__(name, params, env)
        norm = [normalize(x) for x in params.lines]
        self.exact = frozenset(norm + load_list(env, params.line_lists))
        self.prefixes = tuple(dict.fromkeys([normalize(x) for x in params.prefixes] + load_list(env, params.prefix_lists)))
        self.suffixes = tuple(dict.fromkeys([normalize(x) for x in params.suffixes] + load_list(env, params.suffix_lists)))
        kws = list(dict.fromkeys([normalize(x) for x in params.keywords] + load_list(env, params.keyword_lists)))
        self.keywords = re.compile("|".join(re.escape(k) for k in sorted(kws, key=len, reverse=True))) if kws else None
        try:  # compiled one by one: Python's re scans much faster for each alone than for their union
            self.patterns = [re.compile(p, re.MULTILINE) for p in params.patterns]
        except re.error as e:
            raise ConfigError(f"step {name!r}: bad pattern in 'patterns': {e}") from None
        self.short = params.short_line_chars
        self.pattern_max = params.pattern_max_chars
        self.any_len = params.prefix_suffix_any_length

    def _flags(self, stripped: list[str]) -> list[bool]:
        exact, short, pmax = self.exact, self.short, self.pattern_max
        flags = [bool(s) and s in exact for s in stripped]
        short_idx = [i for i, s in enumerate(stripped) if 0 < len(s) <= short and not flags[i]]
        pre, suf = self.prefixes, self.suffixes
        if self.any_len:
            for i, s in enumerate(stripped):
                if s and (s.startswith(pre) or s.endswith(suf)):
                    flags[i] = True
        else:
            for i in short_idx:
                s = stripped[i]
                if s.startswith(pre) or s.endswith(suf):
                    flags[i] = True
        # regular expressions run once over the joined candidate lines, not once per line
        if self.keywords is not None and short_idx:
            self._mark(self.keywords, [i for i in short_idx if not flags[i]], stripped, flags)
        for pat in self.patterns:
            self._mark(pat, [i for i, s in enumerate(stripped) if s and len(s) <= pmax and not flags[i]],
                       stripped, flags)
        return flags

    @staticmethod
    def _mark(pat: re.Pattern[str], idx: list[int], stripped: list[str], flags: list[bool]) -> None:
        if not idx:
            return
        joined = "\n".join(stripped[i] for i in idx)
        if pat.search(joined) is None:
            return
        starts = []
        pos = 0
        for i in idx:
            starts.append(pos)
            pos += len(stripped[i]) + 1
        for m in pat.finditer(joined):
            flags[idx[bisect.bisect_right(starts, m.start()) - 1]] = True

    def rewrite(self, text: str) -> str:
        lines = text.split("\n")
        flags = self._flags([ln.strip() for ln in lines])
        if not any(flags):
            return text
        return "\n".join(ln for ln, f in zip(lines, flags, strict=True) if not f)


_RUBY = re.compile(r"《[^《》\n]{1,30}》")
_RUBY_BAR = re.compile(r"｜|\|(?=[^|\n]{1,20}《)")
_NOTE = re.compile(r"［＃[^］\n]*］|※［＃[^］\n]*］")


@register("aozora_markup")
class AozoraMarkup(Cleaner):
    """Aozora Bunko markup: ruby 《…》, the ｜ ruby start, ［＃…］ editor notes."""

    def rewrite(self, text: str) -> str:
        if "《" not in text and "［＃" not in text:
            return text
        return _NOTE.sub("", _RUBY.sub("", _RUBY_BAR.sub("", text)))


_P = 0x100000001B3
_PINV = pow(_P, -1, 1 << 64)


def line_hashes(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable 64-bit hashes of every line of ``text`` (split at \\n, compared exactly), with their start
    offsets and lengths, computed with numpy (polynomial prefix hashes modulo 2**64: the same in every
    process and on every machine)."""
    c = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    L = c.size
    nl = np.flatnonzero(c == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [L]))
    powers = np.empty(L + 1, dtype=np.uint64)
    powers[0] = 1
    if L:
        powers[1:] = np.uint64(_P)
        np.cumprod(powers, out=powers)
    prefix = np.zeros(L + 1, dtype=np.uint64)
    np.cumsum(c * powers[:L], out=prefix[1:])
    inv = np.empty(L + 1, dtype=np.uint64)
    inv[0] = 1
    if L:
        inv[1:] = np.uint64(_PINV)
        np.cumprod(inv, out=inv)
    lengths = (ends - starts).astype(np.int64)
    h = (prefix[ends] - prefix[starts]) * inv[starts]
    h ^= lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return h, starts, lengths


class RepeatedParams(StepParams):
    max_docs: int = 10  # drop a line that occurs in more than this many documents of the corpus
    min_chars: int = 5  # shorter lines are never counted or dropped


@register("repeated_lines")
class RepeatedLines(Cleaner):
    """Drop lines that recur across more than ``max_docs`` documents of the whole corpus (CCNet, uzushio).

    Needs a first pass over the corpus (the executor runs it): line hashes are counted once per
    document after the steps before this one, and the frequent ones are handed to every worker.
    Lines are compared exactly as they are at this step (normalize first: it trims their edges).
    """

    Params = RepeatedParams

    def doc_hashes(self, text: str) -> set[int]:
        """The distinct hashes of this text's lines that count (at least ``min_chars`` long)."""
        h, _, lengths = line_hashes(text)
        return set(h[lengths >= self.p.min_chars].tolist())

    def rewrite(self, text: str) -> str:
        frequent = self.env.repeated
        if frequent is None or len(frequent) == 0:
            return text
        h, _, lengths = line_hashes(text)
        idx = np.minimum(np.searchsorted(frequent, h), len(frequent) - 1)  # frequent is sorted
        drop = (frequent[idx] == h) & (lengths >= self.p.min_chars)
        if not drop.any():
            return text
        lines = text.split("\n")
        return "\n".join(ln for ln, d in zip(lines, drop.tolist(), strict=True) if not d)
