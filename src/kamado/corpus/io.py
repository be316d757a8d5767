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


def list_inputs(inputs: list[Path]) -> list[Path]:
    """Expand folders into their shard files (recursively, sorted); files are taken as given."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and _is_shard(q))
            if not found:
                raise KamadoError(f"{p}: folder holds no shard files ({', '.join(SHARD_SUFFIXES)})")
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


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"invalid UTF-8 at byte {e.start}: {raw[e.start:e.start + 4]!r}") from None


def read_shard(path: Path, source: str | None = None, start_line: int = 1,
               text_doc_bytes: int = TEXT_DOC_BYTES) -> Iterator[Document | ReadError]:
    """Yield a Document or a ReadError for every record of a shard, from ``start_line`` on.

    ``source`` defaults to the file's stem; ``line`` is the 1-based line (JSONL, text, WET) or row
    (Parquet) where the record starts. A file that cannot be opened at all yields one ReadError.
    """
    path = Path(path)
    src = source or shard_stem(path)
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            yield from _read_parquet(path, src, start_line)
        elif name.endswith((".txt", ".txt.gz")):
            yield from _read_text(path, src, start_line, text_doc_bytes)
        elif name.endswith((".wet", ".wet.gz")):
            yield from _read_wet(path, src, start_line)
        else:
            yield from _read_jsonl(path, src, start_line)
    except (OSError, EOFError, ValueError) as e:  # truncated gzip, unreadable file, broken zstd frame
        yield ReadError(str(path), -1, f"cannot read the rest of the file: {type(e).__name__}: {e}")


def _read_jsonl(path: Path, src: str, start_line: int) -> Iterator[Document | ReadError]:
    stem = shard_stem(path)
    with open_binary(path) as fh:
        for n, raw in enumerate(fh, 1):
            if n < start_line:
                continue
            if not raw.strip():
                yield ReadError(str(path), n, "blank line")
                continue
            try:
                line = _decode(raw)
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


def _read_parquet(path: Path, src: str, start_line: int) -> Iterator[Document | ReadError]:
    import pyarrow.parquet as pq

    stem = shard_stem(path)
    pf = pq.ParquetFile(path)
    n = 0
    for batch in pf.iter_batches(batch_size=1024):
        for obj in batch.to_pylist():
            n += 1
            if n < start_line:
                continue
            try:
                yield Document.from_json(obj, f"{stem}:{n}", src)
            except ValueError as e:
                yield ReadError(str(path), n, str(e))


_BLANK = re.compile(r"\n[ \t\u3000]*\n")


def _read_text(path: Path, src: str, start_line: int, doc_bytes: int) -> Iterator[Document | ReadError]:
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
            if n < start_line:
                continue
            try:
                line = _decode(raw)
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


def _read_wet(path: Path, src: str, start_line: int) -> Iterator[Document | ReadError]:
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
                text = _decode(body)
            except ValueError as e:
                yield ReadError(str(path), start, str(e))
                continue
            rid = headers.get("warc-record-id", f"{shard_stem(path)}:{start}").strip("<>")
            meta = {k: headers[k] for k in ("warc-target-uri", "warc-date") if k in headers}
            yield Document(id=rid, text=text.strip(), source=src, meta=meta)


def dumps(obj: Any) -> str:
    """One JSON line (UTF-8 kept, no trailing newline)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class ShardWriter:
    """Write JSON records into ``folder/prefix-00000.jsonl.gz``, ``-00001`` … of at most ``max_bytes``.

    Output is deterministic (gzip ``mtime=0``, no file name in the header); each shard is written
    under a temporary name and renamed when complete, so a folder never holds a half-written shard
    under its final name.
    """

    def __init__(self, folder: Path, prefix: str, max_bytes: int = 256 * 1024 * 1024,
                 compresslevel: int = 5) -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.level = compresslevel
        self.paths: list[Path] = []
        self.records = 0
        self._raw: IO[bytes] | None = None
        self._gz: gzip.GzipFile | None = None
        self._size = 0
        self._tmp: Path | None = None

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{self.prefix}-{len(self.paths):05d}.jsonl.gz"
        self._tmp = final.with_name(f".{final.name}.tmp")
        self._raw = open(self._tmp, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=self.level, mtime=0)
        self._size = 0
        self.paths.append(final)

    def write(self, obj: dict) -> None:
        self.write_line(dumps(obj))

    def write_line(self, line: str) -> None:
        data = line.encode("utf-8") + b"\n"
        if self._gz is not None and self._size and self._size + len(data) > self.max_bytes:
            self._finish()
        if self._gz is None:
            self._open()
        assert self._gz is not None
        self._gz.write(data)
        self._size += len(data)
        self.records += 1

    def _finish(self) -> None:
        if self._gz is None:
            return
        self._gz.close()
        assert self._raw is not None and self._tmp is not None
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._tmp, self.paths[-1])
        self._gz = self._raw = self._tmp = None

    def close(self) -> list[Path]:
        """Finish the current shard; returns every shard written (none when nothing was written)."""
        self._finish()
        return list(self.paths)

    def abort(self) -> None:
        """Drop the shard being written (its temporary file) without renaming it."""
        if self._gz is not None:
            try:
                self._gz.close()
                self._raw.close()  # type: ignore[union-attr]
            finally:
                if self._tmp is not None:
                    self._tmp.unlink(missing_ok=True)
                self.paths.pop()
                self._gz = self._raw = self._tmp = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_documents(paths: list[Path]) -> Iterator[dict]:
    """Plain iteration over the records of written shards (for tests and downstream stages)."""
    for p in paths:
        yield from iter_jsonl(p)
