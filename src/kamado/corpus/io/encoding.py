"""Input encodings: checking a declared ``--encoding``, guessing Shift-JIS/EUC-JP/UTF-16 from a file's first bytes
(for the hint in an error), and decoding one line of bytes in a file's encoding."""

from __future__ import annotations

import re
from pathlib import Path

from kamado.config import KamadoError
from kamado.jsonl import open_binary

_JA_CHARS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\u3000-\u303f\uff01-\uff5e]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_LEGACY = {"cp932": "Shift-JIS (CP932)", "euc_jp": "EUC-JP"}


def check_encoding(name: str | None, what: str = "--encoding") -> str | None:
    """A checked input encoding (None: UTF-8, a BOM stripped). It must keep ``\\n`` and ASCII as single
    bytes (the readers split lines on bytes): UTF-16/32 are refused with a hint."""
    if name is None or not str(name).strip():
        return None
    import codecs

    try:
        info = codecs.lookup(str(name))
    except LookupError:
        raise KamadoError(f"{what} {name!r}: unknown encoding (e.g. utf-8, cp932, euc_jp)") from None
    try:
        ok = "a\n".encode(info.name) == b"a\n"
    except (UnicodeError, LookupError):
        ok = False
    if not ok:
        raise KamadoError(f"{what} {name!r}: only encodings that keep ASCII as single bytes are read line by "
                          "line (utf-8, cp932, euc_jp, ...); convert UTF-16/32 files to UTF-8 first")
    return "utf-8" if info.name in ("utf-8", "utf-8-sig") else info.name


def guess_encoding(sample: bytes) -> str | None:
    """``cp932`` or ``euc_jp`` when ``sample`` (the start of a file that is not valid UTF-8) decodes strictly
    as Japanese text in that encoding; ``utf-16`` for a UTF-16 BOM; else None."""
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    cut = sample.rfind(b"\n")
    if cut > 0 and len(sample) >= 1 << 16:
        sample = sample[:cut + 1]  # a whole-line sample: no character cut in two
    for enc in ("euc_jp", "cp932"):  # EUC-JP first: most EUC-JP text is also valid (garbled) CP932
        try:
            text = sample.decode(enc)
        except UnicodeDecodeError as e:
            if e.start < len(sample) - 2:  # not just the last character cut in two
                continue
            text = sample[:e.start].decode(enc, "replace")
        non_ascii = sum(1 for c in text if ord(c) > 127)
        if non_ascii and len(_KANA.findall(text)) >= max(1, 0.1 * non_ascii) \
                and len(_JA_CHARS.findall(text)) >= 0.5 * non_ascii:
            return enc
    return None


def encoding_hint(path: Path, encoding: str = "utf-8") -> str:
    """``; the file looks like Shift-JIS (CP932): pass --encoding cp932`` (or EUC-JP, UTF-16; or, read with
    another ``encoding``, that it is UTF-8), else ``""``."""
    try:
        with open_binary(path) as fh:
            sample = fh.read(1 << 16)
    except (OSError, EOFError, ValueError):
        return ""
    if encoding != "utf-8":
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(sample) - 3:
                enc = guess_encoding(sample)
                return f"; the file looks like {_LEGACY[enc]}: pass --encoding {enc}" if enc in _LEGACY \
                    and enc != encoding else ""
        return f"; the file looks like UTF-8: leave out --encoding {encoding}"
    enc = guess_encoding(sample)
    if enc == "utf-16":
        return "; the file looks like UTF-16: convert it to UTF-8"
    if enc:
        return f"; the file looks like {_LEGACY[enc]}: pass --encoding {enc}"
    return ""


class Decoder:
    """Bytes of one line -> text in the file's encoding, CRLF line ends read as LF (the readers drop a UTF-8
    BOM at the start of a file); an undecodable line raises ValueError naming the byte and, for UTF-8 input
    that looks like Shift-JIS/EUC-JP, the ``--encoding`` to pass."""

    def __init__(self, path: Path, encoding: str | None) -> None:
        self.path, self.encoding = path, encoding or "utf-8"
        self.hint: str | None = None

    def __call__(self, raw: bytes) -> str:
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as e:
            if self.hint is None:
                self.hint = encoding_hint(self.path, self.encoding)
            label = "UTF-8" if self.encoding == "utf-8" else self.encoding
            raise ValueError(f"invalid {label} at byte {e.start}: {raw[e.start:e.start + 4]!r}{self.hint}") from None
        return text.replace("\r\n", "\n") if "\r" in text else text
