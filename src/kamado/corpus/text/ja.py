"""Character classes for Japanese (and English) text, counted with numpy over code points.

One pass (``codepoints`` + ``char_classes``) gives every script ratio a filter needs; there is no
per-character Python loop and no morphological analysis.
"""

from __future__ import annotations

import numpy as np

# class ids
OTHER, SPACE, HIRAGANA, KATAKANA, KANJI, JA_PUNCT, LATIN, DIGIT, ASCII_PUNCT, SYMBOL, HANGUL, CYRILLIC, \
    LATIN_EXT = range(13)
NAMES = ["other", "space", "hiragana", "katakana", "kanji", "ja_punct", "latin", "digit", "ascii_punct",
         "symbol", "hangul", "cyrillic", "latin_ext"]
N_CLASSES = len(NAMES)

# (first code point, class) for consecutive ranges; a range lasts until the next entry starts
_RANGES: list[tuple[int, int]] = [
    (0x00, OTHER), (0x09, SPACE), (0x0E, OTHER), (0x20, SPACE), (0x21, ASCII_PUNCT), (0x30, DIGIT),
    (0x3A, ASCII_PUNCT), (0x41, LATIN), (0x5B, ASCII_PUNCT), (0x61, LATIN), (0x7B, ASCII_PUNCT),
    (0x7F, OTHER), (0xA0, SPACE), (0xA1, SYMBOL), (0xC0, LATIN_EXT), (0x250, OTHER),
    (0x400, CYRILLIC), (0x530, OTHER),
    (0x2000, SPACE), (0x200B, OTHER), (0x2010, SYMBOL), (0x2070, OTHER), (0x20A0, SYMBOL), (0x2100, SYMBOL),
    (0x2C00, OTHER), (0x2E80, KANJI), (0x2FE0, OTHER),
    (0x3000, SPACE), (0x3001, JA_PUNCT), (0x3005, KANJI), (0x3006, KANJI), (0x3007, KANJI),
    (0x3008, JA_PUNCT), (0x3041, HIRAGANA), (0x3099, HIRAGANA), (0x30A0, KATAKANA), (0x3100, OTHER),
    (0x3130, HANGUL), (0x3190, OTHER), (0x31F0, KATAKANA), (0x3200, SYMBOL), (0x3400, KANJI),
    (0x4DC0, SYMBOL), (0x4E00, KANJI), (0xA000, OTHER), (0xAC00, HANGUL), (0xD7B0, OTHER),
    (0xF900, KANJI), (0xFB00, OTHER), (0xFF01, ASCII_PUNCT), (0xFF10, DIGIT), (0xFF1A, ASCII_PUNCT),
    (0xFF21, LATIN), (0xFF3B, ASCII_PUNCT), (0xFF41, LATIN), (0xFF5B, ASCII_PUNCT), (0xFF61, JA_PUNCT),
    (0xFF66, KATAKANA), (0xFFA0, OTHER), (0x1F000, SYMBOL), (0x1FB00, OTHER), (0x20000, KANJI),
    (0x323B0, OTHER),
]
_STARTS = np.array([s for s, _ in _RANGES], dtype=np.uint32)
_CLASSES = np.array([c for _, c in _RANGES], dtype=np.int8)
# symbols inside otherwise-classified blocks
_SYMBOL_POINTS = {0x30FB: SYMBOL}  # ・ (nakaguro) is punctuation, not katakana
for cp, cls in _SYMBOL_POINTS.items():
    i = int(np.searchsorted(_STARTS, cp, side="right"))
    _STARTS = np.insert(_STARTS, i, [cp, cp + 1])
    _CLASSES = np.insert(_CLASSES, i, [cls, _CLASSES[i - 1]])
_SYMBOL_BLOCK = (0x2190, 0x2BFF)  # arrows, math, box drawing, shapes, misc symbols, dingbats
i0 = int(np.searchsorted(_STARTS, _SYMBOL_BLOCK[0], side="right"))
i1 = int(np.searchsorted(_STARTS, _SYMBOL_BLOCK[1] + 1, side="right"))
_after = int(_CLASSES[i1 - 1])
_STARTS = np.concatenate([_STARTS[:i0], [_SYMBOL_BLOCK[0], _SYMBOL_BLOCK[1] + 1], _STARTS[i1:]]).astype(np.uint32)
_CLASSES = np.concatenate([_CLASSES[:i0], [SYMBOL, _after], _CLASSES[i1:]]).astype(np.int8)
assert np.all(np.diff(_STARTS.astype(np.int64)) > 0)

LETTER_CLASSES = (HIRAGANA, KATAKANA, KANJI, LATIN, LATIN_EXT, HANGUL, CYRILLIC)


def codepoints(text: str) -> np.ndarray:
    """The text's code points as a uint32 array (one C-level encode, no Python loop)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


_BMP = _CLASSES[np.searchsorted(_STARTS, np.arange(0x10000, dtype=np.uint32), side="right") - 1]


def char_classes(cps: np.ndarray) -> np.ndarray:
    """The class id of every code point (a table lookup in the BMP, a range search above it)."""
    if cps.size and int(cps.max()) >= 0x10000:
        return _CLASSES[np.searchsorted(_STARTS, cps, side="right") - 1]
    return _BMP[cps]


def is_katakana(ch: str) -> bool:
    """Katakana, including the long vowel mark ー (so アス does not match inside アスパラガス)."""
    o = ord(ch)
    return (0x30A1 <= o <= 0x30FA) or o in (0x30FC, 0x30FD, 0x30FE) or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F


def is_word_char(ch: str) -> bool:
    """ASCII/Latin letters and digits: a word boundary check for Latin-script list words."""
    return ch.isascii() and ch.isalnum() or 0xC0 <= ord(ch) <= 0x24F
