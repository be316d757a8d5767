"""kamado.jsonl: the one JSON Lines reader (plain, .gz, .zst; blank lines; errors naming file:line), the log reader
(``read_records``) and the one JSON-safe rule (``to_json_safe``, both NaN rules)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import zstandard

from kamado.config import KamadoError
from kamado.jsonl import iter_jsonl, iter_numbered, read_jsonl, read_records, to_json_safe

BODY = b'{"a": 1}\n\n{"text": "\xe6\x97\xa5\xe6\x9c\xac"}\n  \n[1, 2]\n'


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_reads_every_compression(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"x{suffix}"
    data = {".jsonl": BODY, ".jsonl.gz": gzip.compress(BODY),
            ".jsonl.zst": zstandard.ZstdCompressor().compress(BODY)}[suffix]
    p.write_bytes(data)
    assert read_jsonl(p) == [{"a": 1}, {"text": "日本"}, [1, 2]]
    assert [n for n, _ in iter_numbered(p)] == [1, 3, 5]  # blank lines skipped, numbers kept


def test_broken_line_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": \n{"b": 2}\n')
    with pytest.raises(KamadoError, match=r"bad\.jsonl:2: not a JSON line"):
        read_jsonl(p)
    assert read_jsonl(p, skip_bad=True) == [{"a": 1}, {"b": 2}]
    p.write_bytes(b'{"a": 1}\n"\xff"\n')
    with pytest.raises(KamadoError, match=r"bad\.jsonl:2: invalid UTF-8"):
        list(iter_jsonl(p))
    assert read_jsonl(p, skip_bad=True) == [{"a": 1}]


def test_torn_last_line_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo', encoding="utf-8")  # a killed writer
    assert read_jsonl(p, skip_bad=True) == [{"step": 1}, {"step": 2}]
    assert read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []
    with pytest.raises(KamadoError, match="none.jsonl: cannot open"):
        read_jsonl(tmp_path / "none.jsonl")


def test_truncated_gzip(tmp_path: Path) -> None:
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(gzip.compress(b"".join(b'{"i": %d}\n' % i for i in range(5000)))[:-200])
    with pytest.raises(KamadoError, match=r"cut\.jsonl\.gz:\d+: cannot read the rest of the file"):
        read_jsonl(p)
    assert len(read_jsonl(p, skip_bad=True)) > 100


def test_read_records_keeps_only_whole_objects(tmp_path: Path) -> None:
    """A log cut by a killed writer: torn lines and non-objects are skipped, a missing file is empty."""
    p = tmp_path / "metrics.jsonl"
    p.write_bytes(b'{"step": 1}\n[1, 2]\n"x"\n\xff\xfe\n{"step": 2}\n{"step": 3, "lo')
    assert read_records(p) == [{"step": 1}, {"step": 2}]
    assert read_records(tmp_path / "missing.jsonl") == []


def test_to_json_safe_both_nan_rules() -> None:
    """results.json's rule (NaN/inf -> null) and the alerts' and events' rule (-> "nan"/"inf"/"-inf")."""
    import numpy as np

    x = {"a": float("nan"), 3: (float("inf"), -float("inf"), 1.5), "n": np.float32(0.25), "i": np.int64(7),
         "m": np.float64("nan"), "p": Path("p"), "ok": [True, None, "s"]}
    null = to_json_safe(x, nonfinite="null")
    assert null == {"a": None, "3": [None, None, 1.5], "n": 0.25, "i": 7, "m": None, "p": "p", "ok": [True, None, "s"]}
    text = to_json_safe(x, nonfinite="string")
    assert text == {"a": "nan", "3": ["inf", "-inf", 1.5], "n": 0.25, "i": 7, "m": "nan", "p": "p",
                    "ok": [True, None, "s"]}
    for v in (null, text):
        json.dumps(v, allow_nan=False)  # strict JSON
    assert x["a"] != x["a"]  # the input is not changed
    with pytest.raises(ValueError, match="nonfinite"):
        to_json_safe(float("nan"), nonfinite="zero")  # type: ignore[arg-type]
