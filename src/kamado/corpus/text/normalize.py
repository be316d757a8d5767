"""Text normalization that is safe for Japanese.

NFKC folds half-width kana to full width and full-width ASCII to ASCII, but it would also turn
…/‥ into dots and ゛゜ into a space plus a combining mark: those are protected. Control and
zero-width characters are removed, line ends unified, runs of spaces collapsed, and mojibake from
UTF-8 bytes decoded as cp932 or Latin-1 is repaired when the repair decodes cleanly.
"""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff\ufffe\ufff9-\ufffb\u202a-\u202e]")
_NEWLINES = re.compile("\r\n?|[\u2028\u2029\x85\x0b\x0c]")
_HSPACE = re.compile("[ \t\u00a0\u3000\u2000-\u200a\u202f\u205f]+")
_EDGE = re.compile(" *\n *")
_MANY_NL = re.compile("\n{3,}")
_MOJI_CP932 = re.compile("[縺繧繝蜈螟譁]")  # lead characters of UTF-8 kana/kanji read as cp932
_MOJI_LATIN1 = re.compile("[\u00e3\u00e2\u00ef\u00e5\u00e6\u00e7\u00e8\u00e9][\u0080-\u00bf]")


_UNSTABLE: tuple[re.Pattern[str], re.Pattern[str]] | None = None


def _unstable() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Runs of characters NFKC may change (or compose), each with the character before it.

    Built once per process (~0.3 s) from the running Python's Unicode tables.
    """
    global _UNSTABLE
    if _UNSTABLE is None:
        cps = [c for c in range(0x30000) if not 0xD800 <= c < 0xE000
               and (not unicodedata.is_normalized("NFKC", chr(c)) or unicodedata.combining(chr(c)))]
        cps += list(range(0x1100, 0x1200))  # conjoining Hangul jamo compose with each other
        keep = {ord(c) for c in "\u2026\u2025\u309b\u309c"}
        cps = sorted(set(cps) - keep)
        def charclass(points: list[int]) -> str:
            out: list[str] = []
            i = 0
            while i < len(points):
                j = i
                while j + 1 < len(points) and points[j + 1] == points[j] + 1:
                    j += 1
                a, b = re.escape(chr(points[i])), re.escape(chr(points[j]))
                out.append(a if i == j else f"{a}-{b}")
                i = j + 1
            return "".join(out)

        # BMP classes compile to a bitmap (fast); the few astral ranges are a separate, rarely used pass
        bmp = charclass([c for c in cps if c < 0x10000])
        astral = charclass([c for c in cps if c >= 0x10000])
        _UNSTABLE = (re.compile(f"[{bmp}]+"), re.compile(f"[{astral}]+"))
    return _UNSTABLE


_MEMO: dict[str, str] = {}


def _normalize_runs(pat: re.Pattern[str], text: str, memo: dict[str, str], *, with_starter: bool,
                    memo_len: int) -> str:
    """``text`` with every run of ``pat`` replaced by its NFKC form. The run is taken with the character
    before it always (``with_starter``: that stable character may compose with the run's first one), or
    only when the run starts with a combining mark or a conjoining Hangul vowel/final. Short runs repeat
    (（ ） ！ ？, full-width digits): their forms are kept in ``memo``."""
    out: list[str] = []
    pos = 0
    norm = unicodedata.normalize
    for m in pat.finditer(text):
        s, e = m.span()
        if s > pos and (with_starter or unicodedata.combining(text[s]) or "\u1160" <= text[s] <= "\u11ff"):
            s -= 1
        out.append(text[pos:s])
        run = text[s:e]
        rep = memo.get(run)
        if rep is None:
            rep = norm("NFKC", run)
            if len(run) <= memo_len and len(memo) < 100_000:
                memo[run] = rep
        out.append(rep)
        pos = e
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def nfkc_ja(text: str) -> str:
    """NFKC, except for the characters it would damage in Japanese text (…‥゛゜ are kept).

    Only the runs that can change are normalized (plain NFKC of a whole text is slow in CPython).
    """
    if text.isascii() or unicodedata.is_normalized("NFKC", text):  # (…‥゛゜ are not NFKC-stable)
        return text
    bmp, astral = _unstable()
    text = _normalize_runs(bmp, text, _MEMO, with_starter=False, memo_len=4)
    if len(text.encode("utf-16-le", "surrogatepass")) > 2 * len(text):  # astral characters present
        text = _normalize_runs(astral, text, _MEMO, with_starter=False, memo_len=4)
    return text


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 decoded as cp932 or Latin-1/cp1252, when the whole text round-trips cleanly."""
    if text.isascii():
        return text
    if "縺" in text or "繧" in text or "繝" in text:
        n = len(_MOJI_CP932.findall(text))
    else:
        n = 0
    if n >= 3 and n * 8 >= len(text):
        try:
            return text.encode("cp932").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    if ("\u00e3" in text or "\u00e2" in text or "\u00ef" in text or "\u00e5" in text or "\u00e6" in text
            or "\u00e7" in text or "\u00e8" in text or "\u00e9" in text) and _MOJI_LATIN1.search(text):
        for enc in ("cp1252", "latin-1"):
            try:
                fixed = text.encode(enc).decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                continue
            return fixed
    return text


def normalize(text: str, nfkc: bool = True, mojibake: bool = True, control: bool = True,
              whitespace: bool = True) -> str:
    """The default normalization (each part can be switched off); cheap substring checks skip the
    regular expressions that have nothing to do."""
    if mojibake and not text.isascii():
        text = fix_mojibake(text)
    if (whitespace or control) and ("\r" in text or "\u2028" in text or "\u2029" in text or "\x85" in text
                                    or "\x0b" in text or "\x0c" in text):
        text = _NEWLINES.sub("\n", text)
    if nfkc:
        text = nfkc_ja(text)
    # control and format characters: a C-level isprintable() check spares the regular expression
    # (after NFKC, the only non-printables left in ordinary text are line breaks and tabs)
    if control and not text.replace("\n", " ").replace("\t", " ").isprintable():
        text = _CONTROL.sub("", text)
    if whitespace:
        if "  " in text or "\t" in text or "\u00a0" in text or "\u3000" in text or "\u2009" in text:
            text = _HSPACE.sub(" ", text)
        if " \n" in text or "\n " in text:
            text = _EDGE.sub("\n", text)
        if "\n\n\n" in text:
            text = _MANY_NL.sub("\n\n", text)
        text = text.strip()
    return text


# ----------------------------------------------------------------------------------- exact NFKC, fast
_NFKC_EXACT: tuple[re.Pattern[str], re.Pattern[str]] | None = None
_NFKC_TABLE = "resources/nfkc_unstable.txt"  # the runs' character class, per Unicode version (built once)


def _unstable_points() -> list[int]:
    """Code points that NFKC may change or that may compose with the character before them: not NFKC
    alone, combining marks, second halves of canonical compositions, Hangul jamo."""
    second: set[int] = set()
    for c in range(0x110000):
        if 0xD800 <= c < 0xE000:
            continue
        d = unicodedata.decomposition(chr(c))
        if d and not d.startswith("<"):
            parts = d.split()
            if len(parts) == 2:
                second.add(int(parts[1], 16))
    cps = {c for c in range(0x110000) if not 0xD800 <= c < 0xE000
           and (c in second or unicodedata.combining(chr(c)) or not unicodedata.is_normalized("NFKC", chr(c)))}
    cps.update(range(0x1100, 0x1200))
    return sorted(cps)


def _ranges(points: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in points:
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def nfkc_table_text() -> str:
    """The packaged table's content for the running Python's Unicode version (see :func:`nfkc`)."""
    rs = _ranges(_unstable_points())
    return unicodedata.unidata_version + "\n" + ",".join(f"{a:X}-{b:X}" for a, b in rs) + "\n"


def _nfkc_exact() -> tuple[re.Pattern[str], re.Pattern[str]]:
    global _NFKC_EXACT
    if _NFKC_EXACT is None:
        from importlib import resources

        try:
            text = resources.files("kamado").joinpath(_NFKC_TABLE).read_text(encoding="ascii")
        except OSError:
            text = ""
        if text.split("\n", 1)[0] != unicodedata.unidata_version:
            text = nfkc_table_text()  # another Unicode version: build it (~0.2 s)
        rs = [tuple(int(x, 16) for x in r.split("-")) for r in text.split("\n")[1].split(",") if r]

        def cls(parts: list[tuple[int, ...]]) -> str:
            return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                           for a, b in parts)

        bmp = [(a, min(b, 0xFFFF)) for a, b in rs if a < 0x10000]
        # BMP-only classes compile to a bitmap (fast); texts with astral characters use the full class
        _NFKC_EXACT = (re.compile(f"[{cls(bmp)}]+"), re.compile(f"[{cls(rs)}]+"))
    return _NFKC_EXACT


_MEMO_EXACT: dict[str, str] = {}


def nfkc(text: str) -> str:
    """Exactly ``unicodedata.normalize("NFKC", text)`` (HojiChar's DocumentNormalizer), ~9x faster on
    Japanese web text: only the runs of characters that can change are normalized, each with the stable
    character before it (NFKC never acts across a stable, non-composing starter)."""
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return text
    bmp, full = _nfkc_exact()
    astral = len(text.encode("utf-16-le", "surrogatepass")) > 2 * len(text)
    return _normalize_runs(full if astral else bmp, text, _MEMO_EXACT, with_starter=True, memo_len=5)
