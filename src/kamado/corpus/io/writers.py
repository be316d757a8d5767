"""Writing document shards: :class:`ShardWriter` (``jsonl.gz``, ``jsonl.zst`` or ``parquet``), deterministic
(gzip ``mtime=0``, fixed names) and never half-written under a final name (temporary name, renamed when complete)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import IO, Any, Literal

from kamado.config import KamadoError
from kamado.corpus.io.documents import dumps

# output shard formats: name -> (file suffix, default level chosen for throughput). gzip 1 goes through ISA-L
# (python-isal) when installed: ~4x zlib's speed at zlib-1's ratio; levels above 3 use zlib itself.
SHARD_FORMATS = {"jsonl.gz": (".jsonl.gz", 1), "jsonl.zst": (".jsonl.zst", 1), "parquet": (".parquet", 3)}
ShardFormat = Literal["jsonl.zst", "jsonl.gz", "parquet"]
DEFAULT_FORMAT: ShardFormat = "jsonl.zst"  # of the corpus stage's shards (corpus.shard_format)
# of `kamado corpus clean`/`dedup` and the jobs' API: readable by anything (the contract checks glob kept/*.jsonl.gz)
COMMAND_FORMAT: ShardFormat = "jsonl.gz"
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
                 compresslevel: int | None = None, format: str = COMMAND_FORMAT) -> None:
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
