"""Reading document shards, line by line, without ever crashing on bad input.

Readers yield :class:`Document` for good records and :class:`ReadError` for every input line that
cannot become one (broken JSON, invalid UTF-8, a non-object line, a missing or non-string ``text``,
a blank line), each with its file and 1-based line number, so ``input = kept + rejected + errors``
holds line by line. Also: listing the input files of
folders, and reading back the shards a :class:`~kamado.corpus.io.writers.ShardWriter` wrote.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from kamado.config import KamadoError
from kamado.corpus.io.documents import Document, ReadError
from kamado.corpus.io.encoding import Decoder
from kamado.corpus.io.ranges import ByteRange, RowGroupRange, splittable
from kamado.corpus.io.writers import SHARD_FORMATS
from kamado.jsonl import iter_jsonl, open_binary

SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".parquet", ".txt", ".txt.gz",
                  ".warc.wet", ".warc.wet.gz", ".wet", ".wet.gz")
TEXT_DOC_BYTES = 32_000  # plain text: group blank-line paragraphs into documents of about this size


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
            yield from _read_jsonl(path, src, start_line, Decoder(path, encoding), byte_range)
        elif name.endswith(".parquet"):
            yield from _read_parquet(path, src, start_line, row_groups)
        elif name.endswith((".txt", ".txt.gz")):
            yield from _read_text(path, src, start_line, text_doc_bytes, Decoder(path, encoding))
        elif name.endswith((".wet", ".wet.gz")):
            yield from _read_wet(path, src, start_line, Decoder(path, encoding))
        else:
            yield from _read_jsonl(path, src, start_line, Decoder(path, encoding))
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


def _read_jsonl(path: Path, src: str, start_line: int, decode: Decoder,
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
               decode: Decoder) -> Iterator[Document | ReadError]:
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


def _read_wet(path: Path, src: str, start_line: int, decode: Decoder) -> Iterator[Document | ReadError]:
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
