"""Output formats of the corpus jobs: the same records in jsonl.gz (gzip 1 via ISA-L), jsonl.zst and Parquet;
rejected documents as ids + reasons only; the dedup normalisation equals plain NFKC."""

from __future__ import annotations

import gzip
import json
import random
import unicodedata
from pathlib import Path

import pytest

from kamado.corpus.dedup.minhash import normalize
from kamado.corpus.dedup.run import run_dedup
from kamado.corpus.io.readers import read_documents, read_shard, shard_files
from kamado.corpus.io.writers import ShardWriter, shard_format


def _corpus(tmp_path: Path) -> Path:
    rng = random.Random(3)
    base = ["".join(rng.choice("あいうえおかきくけこさしすせそ漢字カナＡＢ１２（）！　ｶﾞ") for _ in range(400))
            for _ in range(40)]
    docs = [{"id": f"d{i}", "text": t, "source": "s", "extra": {"n": i}} for i, t in enumerate(base)]
    docs += [{"id": f"x{i}", "text": base[i]} for i in range(5)]  # exact copies
    docs += [{"id": f"n{i}", "text": base[i][:-3] + "のの。"} for i in range(5, 10)]  # near copies
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return p


def _records(folder: Path) -> list[dict]:
    return list(read_documents(shard_files(folder)))


@pytest.mark.parametrize("fmt", ["jsonl.zst", "parquet"])
def test_dedup_formats_hold_the_same_records(tmp_path: Path, fmt: str) -> None:
    src = _corpus(tmp_path)
    a = run_dedup([src], tmp_path / "gz", workers=1)
    b = run_dedup([src], tmp_path / fmt, workers=1, format=fmt)
    assert (a["kept"], a["rejected"]) == (b["kept"], b["rejected"]) and a["rejected"] == 10
    suffix = ".parquet" if fmt == "parquet" else ".jsonl.zst"
    assert all(f.endswith(suffix) for f in b["kept_files"] + b["rejected_files"])
    for sub in ("kept", "rejected"):
        assert _records(tmp_path / fmt / sub) == _records(tmp_path / "gz" / sub)
    # downstream readers take the written shards as input again
    docs = [d for p in shard_files(tmp_path / fmt / "kept") for d in read_shard(p)]
    assert [d.id for d in docs] == [r["id"] for r in _records(tmp_path / "gz" / "kept")]
    assert docs[0].meta == {"extra": {"n": 0}}


def test_dedup_default_is_gzip_and_rejected_ids_only(tmp_path: Path) -> None:
    src = _corpus(tmp_path)
    full = run_dedup([src], tmp_path / "full", workers=1)
    ids = run_dedup([src], tmp_path / "ids", workers=1, rejected="ids")
    kept = sorted((tmp_path / "full" / "kept").glob("*.jsonl.gz"))
    assert kept and [json.loads(line)["id"] for p in kept for line in gzip.open(p, "rt", encoding="utf-8")] \
        == [r["id"] for r in _records(tmp_path / "ids" / "kept")]
    assert full["rejected"] == ids["rejected"]
    rf, ri = _records(tmp_path / "full" / "rejected"), _records(tmp_path / "ids" / "rejected")
    assert [{k: r[k] for k in ("id", "source", "rejected_by", "reason", "duplicate_of")} for r in rf] == ri
    assert {r["rejected_by"] for r in ri} == {"exact_dedup", "minhash_dedup"}
    assert "text" in rf[0] and "text" not in ri[0]


@pytest.mark.parametrize("fmt,level", [("jsonl.gz", 1), ("jsonl.gz", 6), ("jsonl.zst", 3), ("parquet", None)])
def test_shard_writer_formats_round_trip_and_are_deterministic(tmp_path: Path, fmt: str, level: int | None) -> None:
    recs = [{"id": str(i), "text": "日本語" * (i % 7), "source": "s", "lang": None if i % 2 else "ja",
             "meta": {"k": [i, "x"]}} for i in range(300)]

    def write(folder: Path) -> list[Path]:
        with ShardWriter(folder, "part", max_bytes=4000, compresslevel=level, format=fmt) as w:
            for r in recs:
                w.write(r)
        return w.paths

    a, b = write(tmp_path / "a"), write(tmp_path / "b")
    assert len(a) > 1 and [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert list(read_documents(a)) == recs
    assert not list((tmp_path / "a").glob(".*"))


def test_shard_format_names() -> None:
    assert shard_format("zst") == "jsonl.zst" and shard_format("gz") == "jsonl.gz"
    with pytest.raises(Exception, match="unknown shard format"):
        shard_format("csv")


def test_dedup_normalize_is_plain_nfkc() -> None:
    rng = random.Random(0)
    alphabet = "かがばぱﾊﾟｶﾞｱＡａ１①㍻ﬁ…‥゛゜　 \t\nÅÅé\u0301\u1100\u1161\u11a8한글ᄀ각𝐀😀（）！？漢字ー〜～"
    for _ in range(3000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        assert normalize(t) == " ".join(unicodedata.normalize("NFKC", t).lower().split()), repr(t)


@pytest.mark.parametrize("fmt", ["jsonl.zst", "parquet"])
def test_clean_formats_hold_the_same_records_and_inspect_reads_them(tmp_path: Path, data_root: Path,
                                                                      fmt: str) -> None:
    from kamado.corpus.config import default_chain
    from kamado.corpus.inspect.samples import sample
    from kamado.corpus.jobs.clean import run_clean

    src = tmp_path / "web.jsonl"
    with open(data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl", encoding="utf-8") as f:
        src.write_text("".join(line for _, line in zip(range(120), f, strict=False)), encoding="utf-8")
    chain = default_chain("default-ja")
    a = run_clean([src], tmp_path / "gz", chain, workers=1, data_root=data_root, quiet=True)
    b = run_clean([src], tmp_path / fmt, chain, workers=1, data_root=data_root, quiet=True, format=fmt)
    assert (a["kept"], a["rejected"]) == (b["kept"], b["rejected"]) and a["kept"] and a["rejected"]
    assert all(f.endswith(".parquet" if fmt == "parquet" else ".jsonl.zst") for f in b["kept_files"])
    for sub in ("kept", "rejected"):
        assert _records(tmp_path / fmt / sub) == _records(tmp_path / "gz" / sub)
    kept, rejected, _ = sample(tmp_path / fmt, per_reason=1)
    assert kept and rejected
    # the same command again resumes (nothing to redo); another format is another job
    assert run_clean([src], tmp_path / fmt, chain, workers=1, data_root=data_root, quiet=True, format=fmt)["kept"] == b["kept"]
    with pytest.raises(Exception, match="different clean job"):
        run_clean([src], tmp_path / fmt, chain, workers=1, data_root=data_root, quiet=True)
