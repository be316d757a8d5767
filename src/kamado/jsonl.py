"""The one JSON Lines reader (``.jsonl``, ``.jsonl.gz`` and ``.jsonl.zst`` files, one JSON value a line), and the one
rule that makes a value JSON-safe (:func:`to_json_safe`).

Blank lines are skipped. A line that is not JSON (or not UTF-8) raises :class:`KamadoError` naming the
file and the 1-based line, unless ``skip_bad`` is set (logs a writer may have been killed in the middle
of, such as ``metrics.jsonl``: a torn line is dropped; :func:`read_records` reads such logs). Corpus shards are read by
``kamado.corpus.io.readers.read_shard`` instead, which accounts for every broken line as a ``ReadError`` record.
"""

from __future__ import annotations

import gzip
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

from kamado.config import KamadoError


def open_binary(path: Path | str) -> IO[bytes]:
    """Open a file for binary reading, decompressing ``.gz`` / ``.zst`` / ``.zstd`` by name."""
    name = str(path).lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith((".zst", ".zstd")):
        import zstandard

        fh = open(path, "rb")
        return io.BufferedReader(_ZstdReader(zstandard.ZstdDecompressor().stream_reader(fh, closefd=True), path))
    return open(path, "rb")


class _ZstdReader(io.RawIOBase):
    """A zstd stream whose damage is an ``OSError`` naming the file, as a damaged gzip stream's is: every reader
    that counts a truncated ``.gz`` as an error record of its file does the same for a corrupted ``.zst``."""

    def __init__(self, raw: Any, path: Path | str) -> None:
        self._raw, self._path = raw, path

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        import zstandard

        try:
            return self._raw.readinto(b)
        except zstandard.ZstdError as e:
            raise OSError(f"damaged zstd data in {self._path}: {e}") from None

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def iter_numbered(path: Path | str, *, skip_bad: bool = False) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a JSON Lines file, in order."""
    try:
        fh = open_binary(path)
    except OSError as e:
        raise KamadoError(f"{path}: cannot open: {e.strerror or e}") from None
    with fh:
        n = 0
        try:
            for n, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    if skip_bad:
                        continue
                    raise KamadoError(f"{path}:{n}: invalid UTF-8 at byte {e.start}") from None
                except (json.JSONDecodeError, RecursionError) as e:
                    if skip_bad:
                        continue
                    why = f"{e.msg} (column {e.colno})" if isinstance(e, json.JSONDecodeError) else "nested too deeply"
                    raise KamadoError(f"{path}:{n}: not a JSON line: {why}") from None
                yield n, value
        except (OSError, EOFError) as e:  # truncated gzip, broken zstd frame
            if not skip_bad:
                raise KamadoError(f"{path}:{n + 1}: cannot read the rest of the file: {e}") from None


def iter_jsonl(path: Path | str, *, skip_bad: bool = False) -> Iterator[Any]:
    """The values of a JSON Lines file, in order (see the module doc for blank and broken lines)."""
    for _, value in iter_numbered(path, skip_bad=skip_bad):
        yield value


def read_jsonl(path: Path | str, *, skip_bad: bool = False, missing_ok: bool = False) -> list[Any]:
    """All values of a JSON Lines file; a missing file is ``[]`` with ``missing_ok``, else an error."""
    if missing_ok and not Path(path).is_file():
        return []
    return list(iter_jsonl(path, skip_bad=skip_bad))


def read_records(path: Path | str) -> list[dict[str, Any]]:
    """The JSON objects of a log a killed writer may have cut (``metrics.jsonl``, ``events.jsonl``): a missing
    file is ``[]``; broken lines and values that are not objects are skipped."""
    return [r for r in read_jsonl(path, skip_bad=True, missing_ok=True) if isinstance(r, dict)]


def to_json_safe(x: Any, *, nonfinite: Literal["null", "string"]) -> Any:
    """A copy of ``x`` that ``json.dumps(..., allow_nan=False)`` accepts.

    ``nonfinite`` says what NaN and ±inf become: ``"null"`` (``results.json``: a metric that has no value) or
    ``"string"`` (``"nan"``, ``"inf"``, ``"-inf"``: alerts and guard events, where the bad value is the news).
    Mappings get string keys, tuples become lists, 0-d tensors and numpy scalars their Python number, and any
    other value that JSON has no type for its ``str()``.
    """
    if isinstance(x, dict):
        return {str(k): to_json_safe(v, nonfinite=nonfinite) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_json_safe(v, nonfinite=nonfinite) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 0) == 0:
        try:
            x = x.item()
        except Exception:
            return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        if nonfinite == "null":
            return None
        if nonfinite == "string":
            return str(x)
        raise ValueError(f"nonfinite={nonfinite!r}: expected 'null' or 'string'")
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)
