"""Reading and writing document shards, line by line, without ever crashing on bad input.

Readers yield :class:`Document` for good records and :class:`ReadError` for every input line that
cannot become one (broken JSON, invalid UTF-8, a non-object line, a missing or non-string ``text``,
a blank line), each with its file and 1-based line number, so ``input = kept + rejected + errors``
holds line by line. Writers produce deterministic gzip shards (fixed names, ``mtime=0``) written to
a temporary name and renamed when complete.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kamado.config import KamadoError
from kamado.jsonl import iter_jsonl, open_binary

SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".parquet", ".txt", ".txt.gz",
                  ".warc.wet", ".warc.wet.gz", ".wet", ".wet.gz")
TEXT_DOC_BYTES = 32_000  # plain text: group blank-line paragraphs into documents of about this size


@dataclass
class Document:
    """One document: the unit every cleaner and filter works on."""

    id: str
    text: str
    source: str
    lang: str | None = None
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "text": self.text, "source": self.source, "lang": self.lang, "meta": self.meta}

    @classmethod
    def from_json(cls, obj: dict, default_id: str, default_source: str) -> Document:
        """Build from a record of any shape; fields other than id/text/source/lang/meta go to ``meta``.

        Raises ``ValueError`` when ``text`` is missing or not a string.
        """
        text = obj.get("text")
        if text is None:
            raise ValueError("record has no 'text' field")
        if not isinstance(text, str):
            raise ValueError(f"'text' is {type(text).__name__}, not a string")
        meta = obj.get("meta")
        meta = dict(meta) if isinstance(meta, dict) else ({} if meta is None else {"meta": meta})
        for k, v in obj.items():
            if k not in ("id", "text", "source", "lang", "meta"):
                meta[k] = v
        rid = obj.get("id")
        src = obj.get("source")
        lang = obj.get("lang")
        return cls(id=str(rid) if rid not in (None, "") else default_id,
                   text=text,
                   source=str(src) if isinstance(src, str) and src else default_source,
                   lang=lang if isinstance(lang, str) else None,
                   meta=meta)


@dataclass
class ReadError:
    """An input line that could not become a document."""

    file: str
    line: int
    error: str

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "error": self.error}


def _is_shard(p: Path) -> bool:
    name = p.name.lower()
    return not name.startswith(".") and name.endswith(SHARD_SUFFIXES)


def list_inputs(inputs: list[Path], warn: bool = True) -> list[Path]:
    """Expand folders into their shard files (recursively, sorted); files are taken as given.

    Files of a folder with other extensions are not read: they are named in a warning (``warn``) or, when
    the folder holds no shard at all, in the error."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file())
            found = [q for q in files if _is_shard(q)]
            other = [str(q.relative_to(p)) for q in files if not _is_shard(q)
                     and not any(part.startswith(".") for part in q.relative_to(p).parts)]
            listed = ", ".join(other[:10]) + (f" and {len(other) - 10} more" if len(other) > 10 else "")
            if not found:
                raise KamadoError(f"{p}: folder holds no shard files ({', '.join(SHARD_SUFFIXES)})"
                                  + (f"; not read: {listed}" if other else ""))
            if other and warn:
                from kamado.ui import console

                console.print(f"[yellow]warning:[/] {p}: {len(other)} file(s) with an unsupported extension are "
                              f"not read: {listed} (read: {', '.join(SHARD_SUFFIXES)})", highlight=False,
                              soft_wrap=True)
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise KamadoError(f"{p}: no such file or folder")
    seen: set[Path] = set()
    uniq = []
    for p in out:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            uniq.append(p)
    return uniq


def shard_stem(path: Path) -> str:
    """File name without its shard suffixes: ``a/b/web-01.jsonl.gz`` -> ``web-01``."""
    name = Path(path).name
    for suf in sorted(SHARD_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(path).stem


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


class _Decoder:
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


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of an uncompressed JSONL file: the lines that *start* inside them (``start`` is
    always a line start), the first of which is line ``first_line`` of the file."""

    start: int
    end: int
    first_line: int

    def to_json(self) -> list[int]:
        return [self.start, self.end, self.first_line]

    @classmethod
    def from_json(cls, v: list[int]) -> ByteRange:
        return cls(int(v[0]), int(v[1]), int(v[2]))


@dataclass(frozen=True)
class RowGroupRange:
    """Row groups ``[start, end)`` of a Parquet file, whose first row is row ``first_row`` of the file."""

    start: int
    end: int
    first_row: int

    def to_json(self) -> list[int]:
        return [self.start, self.end, self.first_row]

    @classmethod
    def from_json(cls, v: list[int]) -> RowGroupRange:
        return cls(int(v[0]), int(v[1]), int(v[2]))


def splittable(path: Path) -> bool:
    """Whether ``path`` can be read by byte range: uncompressed JSON lines (not gzip/zstd/Parquet/text/WET)."""
    return Path(path).name.lower().endswith(".jsonl")


def row_group_ranges(path: Path, split_bytes: int) -> list[RowGroupRange]:
    """Consecutive row groups of a Parquet file gathered into ranges of about ``split_bytes`` (compressed, as on
    disk); each range knows its first row's number (from the footer: no data read). One range for a file no
    larger than ``split_bytes``, of a single row group, or when ``split_bytes <= 0``."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    n = md.num_row_groups
    if split_bytes <= 0 or n <= 1 or Path(path).stat().st_size <= split_bytes:
        return [RowGroupRange(0, n, 1)]
    out: list[RowGroupRange] = []
    start, size, row, first = 0, 0, 0, 1
    for g in range(n):
        rg = md.row_group(g)
        size += sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
        row += rg.num_rows
        if size >= split_bytes or g == n - 1:
            out.append(RowGroupRange(start, g + 1, first))
            start, size, first = g + 1, 0, row + 1
    return out


def row_group_bytes(path: Path, ranges: list[RowGroupRange]) -> list[int]:
    """Bytes of the file assigned to each range (its row groups' compressed sizes; the footer to the last), summing
    to the file's size."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    sizes = []
    for r in ranges:
        sizes.append(sum(md.row_group(g).column(c).total_compressed_size for g in range(r.start, r.end)
                         for c in range(md.row_group(g).num_columns)))
    sizes[-1] += Path(path).stat().st_size - sum(sizes)
    return sizes


_SCAN = 1 << 20


def _next_line_start(fh: IO[bytes], pos: int, size: int) -> int:
    """The first line start at or after ``pos`` (``size`` when no line starts there)."""
    if pos <= 0:
        return 0
    fh.seek(pos - 1)
    at = pos - 1
    while at < size:
        chunk = fh.read(_SCAN)
        if not chunk:
            break
        i = chunk.find(b"\n")
        if i >= 0:
            return at + i + 1
        at += len(chunk)
    return size


def byte_ranges(path: Path, split_bytes: int) -> list[ByteRange]:
    """Cut an uncompressed JSONL file into ranges of about ``split_bytes`` at line boundaries.

    Range ``k`` owns the lines that start inside ``[k * split_bytes, (k + 1) * split_bytes)`` (the Hadoop rule),
    so its bounds are moved forward to the next line start, and a line longer than a range leaves that range
    empty (dropped). Each range knows the file line it starts at: the newlines before it are counted here, in
    one sequential pass of ``bytes.count`` over 1 MB blocks (GB/s, against MB/s for the work done per range).
    One range for a file no larger than ``split_bytes`` (or ``split_bytes <= 0``)."""
    path = Path(path)
    size = path.stat().st_size
    if split_bytes <= 0 or size <= split_bytes:
        return [ByteRange(0, size, 1)]
    with open(path, "rb") as fh:
        starts = [0]
        for b in range(split_bytes, size, split_bytes):
            a = _next_line_start(fh, b, size)
            if a > starts[-1] and a < size:
                starts.append(a)
        fh.seek(0)
        firsts, pos, lines = [1], 0, 0
        for a in starts[1:]:
            while pos < a:
                chunk = fh.read(min(_SCAN, a - pos))
                if not chunk:
                    break
                lines += chunk.count(b"\n")
                pos += len(chunk)
            firsts.append(lines + 1)
    ends = starts[1:] + [size]
    return [ByteRange(s, e, f) for s, e, f in zip(starts, ends, firsts, strict=True)]


def read_shard(path: Path, source: str | None = None, start_line: int = 1,
               text_doc_bytes: int = TEXT_DOC_BYTES, encoding: str | None = None,
               byte_range: ByteRange | None = None,
               row_groups: RowGroupRange | None = None) -> Iterator[Document | ReadError]:
    """Yield a Document or a ReadError for every record of a shard, from ``start_line`` on.

    ``source`` defaults to the file's stem; ``line`` is the 1-based line (JSONL, text, WET) or row
    (Parquet) where the record starts. A file that cannot be opened at all yields one ReadError.
    ``encoding`` (default UTF-8, a BOM dropped) is that of JSONL, text and WET files (e.g. ``cp932``,
    ``euc_jp``); CRLF line ends are read as LF. ``byte_range`` (from :func:`byte_ranges`; uncompressed
    ``.jsonl`` only): read just the lines of that range, numbered with the file's real line numbers;
    ``row_groups`` (from :func:`row_group_ranges`, Parquet only): just those row groups, with the file's row numbers.
    """
    path = Path(path)
    src = source or shard_stem(path)
    name = path.name.lower()
    if byte_range is not None and not splittable(path):
        raise KamadoError(f"{path}: only uncompressed .jsonl files are read by byte range")
    try:
        if byte_range is not None:
            yield from _read_jsonl(path, src, start_line, _Decoder(path, encoding), byte_range)
        elif name.endswith(".parquet"):
            yield from _read_parquet(path, src, start_line, row_groups)
        elif name.endswith((".txt", ".txt.gz")):
            yield from _read_text(path, src, start_line, text_doc_bytes, _Decoder(path, encoding))
        elif name.endswith((".wet", ".wet.gz")):
            yield from _read_wet(path, src, start_line, _Decoder(path, encoding))
        else:
            yield from _read_jsonl(path, src, start_line, _Decoder(path, encoding))
    except (OSError, EOFError, ValueError) as e:  # truncated gzip, unreadable file, broken zstd frame
        yield ReadError(str(path), -1, f"cannot read the rest of the file: {type(e).__name__}: {e}")


def _lines_in_range(fh: IO[bytes], rng: ByteRange) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of the lines that start inside ``rng`` (the last one read to its end)."""
    fh.seek(rng.start)
    pos, n = rng.start, rng.first_line - 1
    for raw in fh:
        if pos >= rng.end:
            return
        n += 1
        pos += len(raw)
        yield n, raw


def _read_jsonl(path: Path, src: str, start_line: int, decode: _Decoder,
                byte_range: ByteRange | None = None,
               row_groups: RowGroupRange | None = None) -> Iterator[Document | ReadError]:
    stem = shard_stem(path)
    with (open(path, "rb") if byte_range is not None else open_binary(path)) as fh:
        lines = _lines_in_range(fh, byte_range) if byte_range is not None else enumerate(fh, 1)
        for n, raw in lines:
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 BOM is not part of the first record
            if n < start_line:
                continue
            if not raw.strip():
                yield ReadError(str(path), n, "blank line")
                continue
            try:
                line = decode(raw)
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"broken JSON: {e.msg} (column {e.colno})") from None
                except RecursionError:
                    raise ValueError("broken JSON: nested too deeply") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"line is a JSON {type(obj).__name__}, not an object")
                yield Document.from_json(obj, f"{stem}:{n}", src)
            except ValueError as e:
                yield ReadError(str(path), n, str(e))


def _read_parquet(path: Path, src: str, start_line: int,
                  row_groups: RowGroupRange | None = None) -> Iterator[Document | ReadError]:
    import pyarrow.parquet as pq

    stem = shard_stem(path)
    pf = pq.ParquetFile(path)
    json_cols = _json_columns(pf)
    n = 0 if row_groups is None else row_groups.first_row - 1
    groups = None if row_groups is None else list(range(row_groups.start, row_groups.end))
    if groups == []:
        return
    for batch in pf.iter_batches(batch_size=1024, row_groups=groups):
        for obj in batch.to_pylist():
            n += 1
            if n < start_line:
                continue
            if json_cols:
                obj = _decode_json_columns(obj, json_cols)
            try:
                yield Document.from_json(obj, f"{stem}:{n}", src)
            except ValueError as e:
                yield ReadError(str(path), n, str(e))


_BLANK = re.compile(r"\n[ \t\u3000]*\n")


def _read_text(path: Path, src: str, start_line: int, doc_bytes: int,
               decode: _Decoder) -> Iterator[Document | ReadError]:
    """Plain text: blank-line separated paragraphs grouped into documents of about ``doc_bytes``.

    A document's id is ``stem:LINE`` (its first line); lines that are not valid UTF-8 become errors
    and end the current document.
    """
    stem = shard_stem(path)
    buf: list[str] = []
    size = 0
    first = 0
    pending_blank = False

    def flush() -> Document | None:
        nonlocal buf, size
        text = "".join(buf).strip("\n")
        buf, size = [], 0
        if not text.strip():
            return None
        return Document(id=f"{stem}:{first}", text=text, source=src, meta={"file": path.name, "line": first})

    with open_binary(path) as fh:
        for n, raw in enumerate(fh, 1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if n < start_line:
                continue
            try:
                line = decode(raw)
            except ValueError as e:
                doc = flush()
                if doc:
                    yield doc
                yield ReadError(str(path), n, str(e))
                continue
            blank = not line.strip()
            if blank:
                pending_blank = True
                if buf:
                    buf.append("\n" if line.endswith("\n") else "")
                continue
            if pending_blank and size >= doc_bytes:
                doc = flush()
                if doc:
                    yield doc
            pending_blank = False
            if not buf:
                first = n
            buf.append(line if line.endswith("\n") else line + "\n")
            size += len(raw)
            if size >= 4 * doc_bytes:  # no blank lines for a long stretch: cut at a line end
                doc = flush()
                if doc:
                    yield doc
    doc = flush()
    if doc:
        yield doc


def _read_wet(path: Path, src: str, start_line: int, decode: _Decoder) -> Iterator[Document | ReadError]:
    """Common Crawl WET: ``WARC/1.0`` header block, blank line, ``Content-Length`` bytes of text."""
    with open_binary(path) as fh:
        n = 0
        while True:
            raw = fh.readline()
            if not raw:
                return
            n += 1
            if not raw.strip():
                continue
            start = n
            if not raw.startswith(b"WARC/"):
                yield ReadError(str(path), n, f"expected a WARC header, got {raw[:40]!r}")
                continue
            headers: dict[str, str] = {}
            while True:
                h = fh.readline()
                if not h:
                    break
                n += 1
                if not h.strip():
                    break
                k, _, v = h.decode("utf-8", "replace").partition(":")
                headers[k.strip().lower()] = v.strip()
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                yield ReadError(str(path), start, "bad Content-Length")
                continue
            body = fh.read(length)
            n += body.count(b"\n")
            if start < start_line or headers.get("warc-type") != "conversion":
                continue
            try:
                text = decode(body)
            except ValueError as e:
                yield ReadError(str(path), start, str(e))
                continue
            rid = headers.get("warc-record-id", f"{shard_stem(path)}:{start}").strip("<>")
            meta = {k: headers[k] for k in ("warc-target-uri", "warc-date") if k in headers}
            yield Document(id=rid, text=text.strip(), source=src, meta=meta)


_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks below 256 MB in the heap (``mallopt``) instead of returning them to the
    OS, once per process. Batch loops that allocate and free the same few MB of arrays over and over then
    reuse pages instead of faulting fresh ones in: on the dedup job that cut the system CPU time ~4x.
    A no-op where there is no glibc."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD: blocks below this come from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to this much freed memory at the heap top
    except (OSError, AttributeError):
        pass


def dumps(obj: Any) -> str:
    """One JSON line (UTF-8 kept, no trailing newline)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# output shard formats: name -> (file suffix, default level chosen for throughput). gzip 1 goes through ISA-L
# (python-isal) when installed: ~4x zlib's speed at zlib-1's ratio; levels above 3 use zlib itself.
SHARD_FORMATS = {"jsonl.gz": (".jsonl.gz", 1), "jsonl.zst": (".jsonl.zst", 1), "parquet": (".parquet", 3)}
DEFAULT_FORMAT = "jsonl.gz"
_BLOCK = 1 << 20  # lines are compressed in blocks of about this many bytes


def shard_format(name: str) -> str:
    """A checked output format name (``jsonl.gz``, ``jsonl.zst`` or ``parquet``; ``gz``/``zst``/``zstd`` too)."""
    key = {"gz": "jsonl.gz", "gzip": "jsonl.gz", "zst": "jsonl.zst", "zstd": "jsonl.zst",
           "jsonl.zstd": "jsonl.zst"}.get(name.lower().lstrip("."), name.lower().lstrip("."))
    if key not in SHARD_FORMATS:
        raise KamadoError(f"unknown shard format {name!r}: use one of {', '.join(SHARD_FORMATS)}")
    return key


def _gzip_file(raw: IO[bytes], level: int) -> gzip.GzipFile:
    """A deterministic gzip stream (``mtime=0``, no file name) at ``level``: ISA-L for 0-3 when available."""
    if level <= 3:
        try:
            from isal import igzip

            return igzip.IGzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0)
        except ImportError:
            level = max(level, 1)
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0)


class ShardWriter:
    """Write JSON records into ``folder/prefix-00000.jsonl.gz``, ``-00001`` … of at most ``max_bytes``
    (uncompressed JSON lines).

    ``format`` is ``jsonl.gz`` (default, readable by anything), ``jsonl.zst`` or ``parquet`` (string columns;
    the ones holding JSON are listed in the file's ``kamado.json_columns`` metadata and decoded by
    :func:`read_shard`); ``compresslevel`` defaults to the format's throughput level (gzip 1, zstd 1).
    Output is deterministic (gzip ``mtime=0``, no file name in the header); each shard is written under a
    temporary name and renamed when complete, so a folder never holds a half-written shard under its final
    name. Lines are compressed in ~1 MB blocks in the calling process (a worker writes its own shards).
    """

    def __init__(self, folder: Path, prefix: str, max_bytes: int = 256 * 1024 * 1024,
                 compresslevel: int | None = None, format: str = DEFAULT_FORMAT) -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.format = shard_format(format)
        self.suffix, default_level = SHARD_FORMATS[self.format]
        self.level = default_level if compresslevel is None else int(compresslevel)
        self.paths: list[Path] = []
        self.records = 0
        self._raw: IO[bytes] | None = None
        self._out: Any = None  # compressor stream or parquet writer
        self._buf: list[bytes] = []
        self._buf_size = 0
        self._size = 0
        self._tmp: Path | None = None

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{self.prefix}-{len(self.paths):05d}{self.suffix}"
        self._tmp = final.with_name(f".{final.name}.tmp")
        self._raw = open(self._tmp, "wb")
        if self.format == "jsonl.gz":
            self._out = _gzip_file(self._raw, self.level)
        elif self.format == "jsonl.zst":
            import zstandard

            self._out = zstandard.ZstdCompressor(level=self.level, write_checksum=True).stream_writer(
                self._raw, closefd=False)
        else:
            self._out = _ParquetSink(self._raw, self.level)
        self._size = 0
        self.paths.append(final)

    def write(self, obj: dict) -> None:
        self.write_bytes(dumps(obj).encode("utf-8"))

    def write_line(self, line: str) -> None:
        self.write_bytes(line.encode("utf-8"))

    def write_bytes(self, line: bytes) -> None:
        """One JSON line, already encoded (UTF-8, no trailing newline)."""
        n = len(line) + 1
        if self._out is not None and self._size and self._size + n > self.max_bytes:
            self._finish()
        if self._out is None:
            self._open()
        self._buf.append(line)
        self._buf_size += n
        self._size += n
        self.records += 1
        if self._buf_size >= _BLOCK:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._buf.append(b"")
            self._out.write(b"\n".join(self._buf))
            self._buf, self._buf_size = [], 0

    def _finish(self) -> None:
        if self._out is None:
            return
        self._flush()
        self._out.close()
        assert self._raw is not None and self._tmp is not None
        if not self._raw.closed:
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
        os.replace(self._tmp, self.paths[-1])
        self._out = self._raw = self._tmp = None

    def close(self) -> list[Path]:
        """Finish the current shard; returns every shard written (none when nothing was written)."""
        self._finish()
        return list(self.paths)

    def abort(self) -> None:
        """Drop the shard being written (its temporary file) without renaming it."""
        self._buf, self._buf_size = [], 0
        if self._out is not None:
            try:
                try:
                    self._out.close()
                finally:
                    self._raw.close()  # type: ignore[union-attr]
            finally:
                if self._tmp is not None:
                    self._tmp.unlink(missing_ok=True)
                self.paths.pop()
                self._out = self._raw = self._tmp = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


_STR_COLUMNS = ("id", "text", "source", "lang", "rejected_by", "reason", "duplicate_of")


class _ParquetSink:
    """Blocks of JSON lines -> one Parquet file: ``id``, ``text``, ``source``, ``lang`` (and the rejection
    fields) as string columns, every other field as a JSON string column named in ``kamado.json_columns``."""

    def __init__(self, raw: IO[bytes], level: int) -> None:
        self.raw, self.level = raw, level
        self.rows: list[dict] = []
        self.cols: list[str] = []

    def write(self, block: bytes) -> None:
        for line in block.split(b"\n"):
            if line:
                obj = json.loads(line)
                for k in obj:
                    if k not in self.cols:
                        self.cols.append(k)
                self.rows.append(obj)

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        json_cols = [c for c in self.cols if c not in _STR_COLUMNS
                     or any(not isinstance(r.get(c), str | None) for r in self.rows)]
        data = {c: [(dumps(r[c]) if c in json_cols else r[c]) if c in r else None for r in self.rows]
                for c in self.cols}
        schema = pa.schema([pa.field(c, pa.string()) for c in self.cols],
                           metadata={"kamado.json_columns": json.dumps(json_cols)})
        table = pa.table(data, schema=schema)
        pq.write_table(table, self.raw, compression="zstd", compression_level=self.level, row_group_size=8192)
        self.rows = []


def _json_columns(pf: Any) -> list[str]:
    """The columns a :class:`ShardWriter` Parquet file holds as JSON text (none for other Parquet files)."""
    meta = pf.schema_arrow.metadata or {}
    raw = meta.get(b"kamado.json_columns")
    return list(json.loads(raw)) if raw else []


def _decode_json_columns(obj: dict, cols: list[str]) -> dict:
    """A row as it was written: JSON columns decoded, fields that the record did not have (null) dropped."""
    out = {}
    for k, v in obj.items():
        if v is None and k not in ("id", "text", "source", "lang"):
            continue
        out[k] = json.loads(v) if k in cols and v is not None else v
    return out


def iter_records(path: Path | str) -> Iterator[dict]:
    """The records of one written shard, whatever its format (JSON lines, plain/.gz/.zst, or Parquet)."""
    if str(path).lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        cols = _json_columns(pf)
        for batch in pf.iter_batches(batch_size=1024):
            for obj in batch.to_pylist():
                yield _decode_json_columns(obj, cols) if cols else obj
    else:
        yield from iter_jsonl(path)


def shard_files(folder: Path) -> list[Path]:
    """The shards a :class:`ShardWriter` wrote into ``folder`` (any format), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name.endswith(tuple(suf for suf, _ in SHARD_FORMATS.values())))


def read_documents(paths: list[Path]) -> Iterator[dict]:
    """Plain iteration over the records of written shards (for tests and downstream stages)."""
    for p in paths:
        yield from iter_records(p)
