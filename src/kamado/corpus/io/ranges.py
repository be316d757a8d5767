"""Cutting one big input file into parts several workers read at once: byte ranges of an uncompressed JSONL file
(at line starts, each knowing its first line number) and runs of Parquet row groups (each knowing its first row)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO


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
