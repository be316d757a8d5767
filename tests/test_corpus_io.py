"""Shard readers and writers: every line accounted for, deterministic output."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from kamado.config import KamadoError
from kamado.corpus.io.documents import Document, ReadError
from kamado.corpus.io.readers import list_inputs, read_documents, read_shard
from kamado.corpus.io.writers import ShardWriter


def _bad_shard(path: Path) -> None:
    with open(path, "wb") as f:
        f.write(json.dumps({"id": "ok-1", "text": "東京は日本の首都です。", "source": "t"}, ensure_ascii=False).encode() + b"\n")
        f.write(b'{"id": "broken", "text": "\xe6\x9d\xb1\n')
        f.write(b'{"id": "bad-utf8", "text": "\xff\xfe abc"}\n')
        f.write(b"\n")
        f.write(b"[1, 2]\n")
        f.write(b'{"id": "no-text"}\n')
        f.write(b'{"text": 3}\n')
        f.write(json.dumps({"text": "番号なし", "title": "t", "label": "good"}, ensure_ascii=False).encode() + b"\n")


def test_read_shard_accounts_every_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    _bad_shard(p)
    recs = list(read_shard(p))
    assert len(recs) == 8  # one record per physical line
    errs = {r.line: r.error for r in recs if isinstance(r, ReadError)}
    assert sorted(errs) == [2, 3, 4, 5, 6, 7]
    assert "broken JSON" in errs[2] and "UTF-8" in errs[3] and errs[4] == "blank line"
    assert "not an object" in errs[5] and "no 'text'" in errs[6] and "not a string" in errs[7]
    docs = [r for r in recs if isinstance(r, Document)]
    assert docs[0].id == "ok-1" and docs[0].source == "t"
    assert docs[1].id == "bad:8" and docs[1].source == "bad"  # missing id: file stem and line
    assert docs[1].meta == {"title": "t", "label": "good"}  # other fields kept in meta


def test_read_formats(tmp_path: Path) -> None:
    recs = [{"id": f"d{i}", "text": f"文書{i}です。"} for i in range(3)]
    raw = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(raw))
    import zstandard

    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "c.parquet")
    (tmp_path / "d.txt").write_text("一段落目。\n続き。\n\n二段落目。\n", encoding="utf-8")
    wet = (b"WARC/1.0\r\nWARC-Type: warcinfo\r\nContent-Length: 4\r\n\r\nabcd\r\n\r\n"
           b"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Target-URI: http://x.jp/\r\n"
           b"WARC-Record-ID: <urn:uuid:1>\r\nContent-Length: 12\r\n\r\n") + "日本語".encode() + b"abc\r\n\r\n"
    (tmp_path / "e.warc.wet").write_bytes(wet)
    files = list_inputs([tmp_path])
    assert [f.name for f in files] == ["a.jsonl.gz", "b.jsonl.zst", "c.parquet", "d.txt", "e.warc.wet"]
    for f in files[:3]:
        got = [(d.id, d.text) for d in read_shard(f)]
        assert got == [(r["id"], r["text"]) for r in recs], f
    txt = list(read_shard(files[3]))
    assert len(txt) == 1 and txt[0].text == "一段落目。\n続き。\n\n二段落目。" and txt[0].id == "d:1"
    (wet_doc,) = list(read_shard(files[4]))
    assert wet_doc.id == "urn:uuid:1" and wet_doc.text == "日本語abc" and wet_doc.meta["warc-target-uri"] == "http://x.jp/"
    with pytest.raises(KamadoError):
        list_inputs([tmp_path / "missing"])


def test_text_split_into_documents(data_root: Path) -> None:
    book = data_root / "en_text" / "gutenberg" / "1342_pride_and_prejudice.txt"
    docs = list(read_shard(book, text_doc_bytes=20_000))
    assert all(isinstance(d, Document) for d in docs)
    assert len(docs) > 20
    assert max(len(d.text.encode()) for d in docs) < 4 * 20_000 + 10_000
    # nothing lost: every non-blank line of the book is in exactly one document, in order
    lines = [ln.strip() for ln in book.read_text(encoding="utf-8").splitlines() if ln.strip()]
    got = [ln.strip() for d in docs for ln in d.text.splitlines() if ln.strip()]
    assert got == lines


def test_shard_writer_deterministic_and_rotates(tmp_path: Path) -> None:
    def write(folder: Path) -> list[Path]:
        w = ShardWriter(folder, "part", max_bytes=2000)
        for i in range(100):
            w.write({"id": str(i), "text": "あ" * 20})
        return w.close()

    a, b = write(tmp_path / "a"), write(tmp_path / "b")
    assert len(a) > 1 and [p.name for p in a] == [p.name for p in b]
    assert a[0].name == "part-00000.jsonl.gz"
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in a] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in b]
    assert [r["id"] for r in read_documents(a)] == [str(i) for i in range(100)]
    assert not list((tmp_path / "a").glob(".*.tmp"))
