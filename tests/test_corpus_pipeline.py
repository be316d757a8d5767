"""The clean job end to end: accounting, determinism across workers and executors, resume, the CLI."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kamado.config import KamadoError
from kamado.corpus.config import default_chain
from kamado.corpus.jobs.clean import run_clean

ROOT = Path(__file__).resolve().parents[1]


def _inputs(tmp: Path, data_root: Path) -> Path:
    """Four shards: real web text split in three, plus a shard of broken lines and a huge document."""
    d = tmp / "in"
    d.mkdir()
    src = data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl"
    lines = src.read_bytes().splitlines(keepends=True)[:600]
    for i in range(3):
        (d / f"web-{i}.jsonl").write_bytes(b"".join(lines[i::3]))
    shutil.copy(data_root / "ja_web_noisy" / "fineweb2_edu_ja_docs.jsonl", d / "web-3.jsonl")
    with open(d / "bad.jsonl", "wb") as f:
        f.write(json.dumps({"id": "ok-1", "text": "東京は日本の首都です。人口は多い。"}, ensure_ascii=False).encode() + b"\n")
        f.write(b'{"id": "broken-json", "text": "\xe6\x9d\xb1\n')
        f.write(b'{"id": "bad-utf8", "text": "\xff\xfe\xfa abc"}\n')
        f.write(json.dumps({"id": "empty", "text": ""}).encode() + b"\n")
        f.write(json.dumps({"id": "huge", "text": "これは非常に長い文書です。" * 400_000}, ensure_ascii=False).encode() + b"\n")
        f.write(b"\n")
    return d


def _contents(out: Path) -> dict[str, list[str]]:
    res = {}
    for sub in ("kept", "rejected"):
        res[sub] = [gzip.open(p, "rt", encoding="utf-8").read() for p in sorted((out / sub).glob("*.jsonl.gz"))]
    res["errors"] = [(out / "errors.jsonl").read_text(encoding="utf-8")]
    return res


def _check_accounting(out: Path) -> dict:
    s = json.loads((out / "stats.json").read_text())
    assert s["input"] == s["kept"] + s["rejected"] + s["errors"]
    kept = [json.loads(ln) for t in _contents(out)["kept"] for ln in t.split("\n") if ln]
    rej = [json.loads(ln) for t in _contents(out)["rejected"] for ln in t.split("\n") if ln]
    assert len(kept) == s["kept"] and len(rej) == s["rejected"]
    assert all(r["rejected_by"] and r["reason"] for r in rej)
    for f in s["files"]:
        assert f["input"] == f["kept"] + f["rejected"] + f["errors"]
    # per-step docs in/out chain up
    steps = s["steps"]
    assert steps[0]["name"] == "read" and steps[0]["docs_out"] == s["input"] - s["errors"]
    for a, b in zip(steps, steps[1:], strict=False):
        assert b["docs_in"] == a["docs_out"]
    assert steps[-1]["docs_out"] == s["kept"]
    return s


def test_clean_accounting_and_workers(tmp_path: Path, data_root: Path) -> None:
    inp = _inputs(tmp_path, data_root)
    chain = default_chain("default-ja")
    s1 = run_clean([inp], tmp_path / "w1", chain, workers=1, data_root=data_root, quiet=True)
    s2 = run_clean([inp], tmp_path / "w2", chain, workers=2, data_root=data_root, quiet=True)
    _check_accounting(tmp_path / "w1")
    assert _contents(tmp_path / "w1") == _contents(tmp_path / "w2")
    assert {k: s1[k] for k in ("input", "kept", "rejected", "errors")} == {k: s2[k] for k in ("input", "kept", "rejected", "errors")}
    errs = [json.loads(ln) for ln in (tmp_path / "w1" / "errors.jsonl").read_text().splitlines()]
    assert {(Path(e["file"]).name, e["line"]) for e in errs} == {("bad.jsonl", 2), ("bad.jsonl", 3), ("bad.jsonl", 6)}
    rej = {json.loads(ln)["id"]: json.loads(ln) for t in _contents(tmp_path / "w1")["rejected"] for ln in t.split("\n") if ln}
    assert rej["huge"]["rejected_by"] == "too_long" and rej["empty"]["reason"].startswith("too_short")
    assert s1["kept"] > 100 and s1["rejected"] > 100
    # re-tuning from stored measurements: a stricter hiragana floor rejects some kept documents
    strict = tmp_path / "strict.yaml"
    text = (ROOT / "src" / "kamado" / "resources" / "chains" / "default-ja.yaml").read_text(encoding="utf-8")
    strict.write_text(text.replace("min_hiragana: 0.2", "min_hiragana: 0.35"), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "kamado.cli", "corpus", "retune", str(tmp_path / "w1"), "--recipe",
                        str(strict)], env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "│ script" in r.stderr + r.stdout


def test_resume_redoes_only_unfinished_shards(tmp_path: Path, data_root: Path) -> None:
    inp = _inputs(tmp_path, data_root)
    chain = default_chain("default-ja")
    out = tmp_path / "out"
    run_clean([inp], out, chain, workers=1, data_root=data_root, quiet=True)
    ref = _contents(out)
    # simulate a job killed while shard 2 was being written: its marker gone, a partial file left behind
    (out / ".work" / "done-00002.json").unlink()
    for p in (out / "kept").glob("part-00002-*.jsonl.gz"):
        p.write_bytes(b"garbage")
    (out / "kept" / ".part-00002-00001.jsonl.gz.tmp").write_bytes(b"partial")
    before = {p.name: p.stat().st_mtime_ns for p in (out / "kept").glob("part-00000-*")}
    run_clean([inp], out, chain, workers=1, data_root=data_root, quiet=True)
    assert _contents(out) == ref
    assert {p.name: p.stat().st_mtime_ns for p in (out / "kept").glob("part-00000-*")} == before  # untouched
    assert not list((out / "kept").glob(".*.tmp"))
    _check_accounting(out)
    with pytest.raises(KamadoError, match="different clean job"):
        run_clean([inp / "web-0.jsonl"], out, chain, workers=1, data_root=data_root, quiet=True)


def test_repeated_lines_across_corpus(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    banner = "このサイトは毎日更新しています。ぜひブックマークしてください。"
    for s in range(3):
        with open(d / f"s{s}.jsonl", "w", encoding="utf-8") as f:
            for i in range(6):
                body = f"第{s}{i}の記事。" + "今日は天気がよかったので、近くの公園まで散歩に出かけました。" * 3
                f.write(json.dumps({"id": f"{s}-{i}", "text": f"{body}\n{banner}\n{i}番目の固有の行です。"}, ensure_ascii=False) + "\n")
    from kamado.corpus.config import ChainConfig

    chain = ChainConfig(steps=[{"type": "normalize"}, {"type": "repeated_lines", "max_docs": 10}])
    s1 = run_clean([d], tmp_path / "a", chain, workers=1, quiet=True)
    s2 = run_clean([d], tmp_path / "b", chain, workers=2, quiet=True)
    kept = [json.loads(ln) for t in _contents(tmp_path / "a")["kept"] for ln in t.split("\n") if ln]
    assert len(kept) == 18 and all(banner not in k["text"] and "固有の行" in k["text"] for k in kept)
    rl = next(st for st in s1["steps"] if st["name"] == "repeated_lines")
    assert rl["chars_removed"] == 18 * (len(banner) + 1)
    assert _contents(tmp_path / "a") == _contents(tmp_path / "b") and s1["kept"] == s2["kept"]


@pytest.mark.slow
def test_ray_matches_local_via_cli(tmp_path: Path, data_root: Path) -> None:
    inp = _inputs(tmp_path, data_root)
    env = {**os.environ, "KAMADO_QUIET": "1", "KAMADO_DATA_ROOT": str(data_root)}
    kamado = [sys.executable, "-m", "kamado.cli"]
    for ex in ("local", "ray"):
        r = subprocess.run([*kamado, "corpus", "clean", str(inp), "--out", str(tmp_path / ex), "--executor", ex,
                            "--workers", "2"], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    assert _contents(tmp_path / "local") == _contents(tmp_path / "ray")
    _check_accounting(tmp_path / "ray")
    r = subprocess.run([*kamado, "corpus", "inspect", str(tmp_path / "ray"), "-n", "1"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "kept (random sample)" in r.stderr + r.stdout


def test_cli_user_errors(tmp_path: Path) -> None:
    env = {**os.environ, "KAMADO_QUIET": "1"}
    r = subprocess.run([sys.executable, "-m", "kamado.cli", "corpus", "clean", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "o")], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "chain.yaml"
    bad.write_text("steps:\n  - {type: script, min_hiragana: lots}\n", encoding="utf-8")
    (tmp_path / "x.jsonl").write_text('{"text": "あ"}\n', encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "kamado.cli", "corpus", "clean", str(tmp_path / "x.jsonl"), "--out",
                        str(tmp_path / "o"), "--recipe", str(bad)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "steps[0].min_hiragana" in r.stderr


# ------------------------------------------------------------------------------------ byte ranges
def _records_of(out: Path) -> dict[str, list[str]]:
    """kept/rejected records in shard-name order (shard boundaries differ between split and unsplit jobs)."""
    res = {sub: [ln for t in _contents(out)[sub] for ln in t.split("\n") if ln] for sub in ("kept", "rejected")}
    res["errors"] = (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()
    return res


def _big_jsonl(tmp: Path, data_root: Path) -> tuple[Path, dict[str, int]]:
    """Real web text in one file with CRLF lines, a blank line, broken JSON and invalid UTF-8 late in the file,
    a line longer than a range, and a last line without a newline; returns the path and the bad lines' numbers."""
    src = (data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl").read_bytes().splitlines(keepends=True)[:400]
    src += (data_root / "ja_web_noisy" / "fineweb2_edu_ja_docs.jsonl").read_bytes().splitlines(keepends=True)[:60]
    lines = list(src)
    lines[5] = lines[5].rstrip(b"\n") + b"\r\n"
    lines[250] = lines[250].rstrip(b"\n") + b"\r\n"
    lines.insert(100, json.dumps({"text": "これは非常に長い一行の文書です。" * 2_500}, ensure_ascii=False).encode() + b"\n")
    lines.insert(300, b'{"id": "broken", "text": "\xe6\x9d\xb1\n')
    lines.insert(350, b"\n")
    lines.insert(420, b'{"id": "bad-utf8", "text": "\xff\xfe abc"}\n')
    lines[-1] = lines[-1].rstrip(b"\n")
    p = tmp / "big.jsonl"
    p.write_bytes(b"".join(lines))
    return p, {"broken": 301, "blank": 351, "bad-utf8": 421, "last": len(lines)}


def test_byte_ranges_cover_every_line_once(tmp_path: Path, data_root: Path) -> None:
    from kamado.corpus.io.ranges import byte_ranges
    from kamado.corpus.io.readers import read_shard

    p, _ = _big_jsonl(tmp_path, data_root)
    data = p.read_bytes()
    split = 24_000
    ranges = byte_ranges(p, split)
    assert len(ranges) > 12 and ranges[0].start == 0 and ranges[-1].end == len(data)
    assert any(data[b - 1:b] != b"\n" for b in range(split, len(data), split))  # nominal cuts land mid-line
    assert len(ranges) < -(-len(data) // split)  # the ~120 kB line swallows whole nominal ranges (dropped)
    for a, b in zip(ranges, ranges[1:], strict=False):
        assert a.end == b.start and data[b.start - 1:b.start] == b"\n"
        assert b.first_line == data[:b.start].count(b"\n") + 1
    whole = [(r.line, r.error) if hasattr(r, "error") else (r.id, r.text) for r in read_shard(p)]
    parts = [(r.line, r.error) if hasattr(r, "error") else (r.id, r.text)
             for rng in ranges for r in read_shard(p, byte_range=rng)]
    assert parts == whole and len(whole) == data.count(b"\n") + 1
    # a cut exactly at a line start keeps that line in the later range
    at = data.index(b"\n", 10_000) + 1
    two = byte_ranges(p, at)
    assert two[1].start == at and two[1].first_line == data[:at].count(b"\n") + 1
    assert byte_ranges(p, 0) == byte_ranges(p, len(data)) == [type(two[0])(0, len(data), 1)]


def test_split_file_matches_one_task(tmp_path: Path, data_root: Path) -> None:
    p, bad = _big_jsonl(tmp_path, data_root)
    (tmp_path / "in").mkdir()
    inp = tmp_path / "in" / p.name
    p.rename(inp)
    shutil.copy(data_root / "ja_web_noisy" / "fineweb2_edu_ja_docs.jsonl", tmp_path / "in" / "z-small.jsonl")
    gz = tmp_path / "in" / "y-packed.jsonl.gz"
    gz.write_bytes(gzip.compress(inp.read_bytes()[:200_000]))  # compressed: never split
    chain = default_chain("default-ja")
    one = run_clean([tmp_path / "in"], tmp_path / "one", chain, workers=1, data_root=data_root, quiet=True, split_bytes=0)
    split = run_clean([tmp_path / "in"], tmp_path / "split", chain, workers=1, data_root=data_root, quiet=True,
                  split_bytes=24_000)
    pool = run_clean([tmp_path / "in"], tmp_path / "pool", chain, workers=2, data_root=data_root, quiet=True,
                 split_bytes=24_000)
    plan = json.loads((tmp_path / "split" / ".work" / "plan.json").read_text())
    assert plan["split_bytes"] == 24_000 and "split_bytes" not in json.loads(
        (tmp_path / "one" / ".work" / "plan.json").read_text())
    n_tasks = len(list((tmp_path / "split" / ".work").glob("done-*.json")))
    assert n_tasks > 12  # the big file in many ranges, the gzip file and the small file one task each
    assert _records_of(tmp_path / "one") == _records_of(tmp_path / "split") == _records_of(tmp_path / "pool")
    counts = ("input", "kept", "rejected", "errors", "chars_in", "chars_kept", "bytes_in", "text_bytes_in", "files")
    assert {k: one[k] for k in counts} == {k: split[k] for k in counts} == {k: pool[k] for k in counts}
    strip = [{k: v for k, v in st.items() if k != "seconds"} for st in one["steps"]]
    assert strip == [{k: v for k, v in st.items() if k != "seconds"} for st in split["steps"]]
    _check_accounting(tmp_path / "split")
    errs = [json.loads(e) for e in _records_of(tmp_path / "split")["errors"]]
    lines = {e["line"] for e in errs if Path(e["file"]).name == "big.jsonl"}
    assert lines == {bad["broken"], bad["blank"], bad["bad-utf8"]}
    assert {Path(e["file"]).name for e in errs} == {"big.jsonl", "y-packed.jsonl.gz"}  # cut-off last line of the gz
    recs = [json.loads(r) for sub in ("kept", "rejected") for r in _records_of(tmp_path / "split")[sub]]
    assert any(r["id"] == "big:101" for r in recs)  # the long id-less line, numbered as in the file
    # resume: a lost range is redone alone, the result unchanged
    (tmp_path / "split" / ".work" / "done-00003.json").unlink()
    again = run_clean([tmp_path / "in"], tmp_path / "split", chain, workers=1, data_root=data_root, quiet=True,
                  split_bytes=24_000)
    assert _records_of(tmp_path / "split") == _records_of(tmp_path / "one") and again["kept"] == one["kept"]


def test_repeated_lines_over_byte_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kamado.corpus.config import ChainConfig
    from kamado.corpus.jobs import clean as clean_job

    banner = "このサイトは毎日更新しています。ぜひブックマークしてください。"
    rare = "このページの内容は予告なく変更されることがあります。"
    p = tmp_path / "in.jsonl"
    with open(p, "w", encoding="utf-8", newline="") as f:
        for i in range(40):
            body = f"第{i}の記事。" + "今日は天気がよかったので、近くの公園まで散歩に出かけました。" * 3
            extra = f"\n{rare}" if i % 4 == 0 else ""  # in 10 documents: not more than max_docs, kept
            f.write(json.dumps({"id": f"d{i}", "text": f"{body}\n{banner}{extra}\n{i}番目の固有の行です。"},
                               ensure_ascii=False) + ("\r\n" if i % 7 == 0 else "\n"))
    chain = ChainConfig(steps=[{"type": "normalize"}, {"type": "repeated_lines", "max_docs": 10}])
    one = run_clean([p], tmp_path / "one", chain, workers=1, quiet=True, split_bytes=0)
    monkeypatch.setattr(clean_job, "MERGE_SLICE", 7)  # the driver merges the tables in many hash slices
    split = run_clean([p], tmp_path / "split", chain, workers=2, quiet=True, split_bytes=2_000)
    assert len(list((tmp_path / "split" / ".work").glob("lines-*.npy"))) >= 8  # ≤ 5 documents per range
    kept = [json.loads(r) for r in _records_of(tmp_path / "split")["kept"]]
    assert len(kept) == 40 and all(banner not in k["text"] and "固有の行" in k["text"] for k in kept)
    assert sum(rare in k["text"] for k in kept) == 10
    assert _records_of(tmp_path / "one") == _records_of(tmp_path / "split") and one["kept"] == split["kept"]


def test_line_counter_folds_exactly(data_root: Path) -> None:
    from kamado.corpus.config import ChainConfig
    from kamado.corpus.io.readers import read_shard
    from kamado.corpus.jobs.line_counts import LineCounter
    from kamado.corpus.steps.base import Env

    chain = ChainConfig(steps=[{"type": "normalize"}, {"type": "repeated_lines", "max_docs": 1, "min_chars": 1}])
    counter = LineCounter(chain, Env())
    counter.FOLD_MIN = 50  # fold every few documents
    ref: dict[int, int] = {}
    docs = [d for d in read_shard(data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl") if hasattr(d, "text")]
    for d in docs[:300] * 3:
        counter.add(d)
        for h in counter.step.doc_hashes(d.text):  # type: ignore[attr-defined]
            ref[h] = ref.get(h, 0) + 1
    keys, vals = counter.arrays()
    assert keys.tolist() == sorted(ref) and vals.tolist() == [ref[k] for k in sorted(ref)]
    assert counter.frequent().tolist() == sorted(k for k, v in ref.items() if v > 1)


def test_parquet_split_by_row_groups(tmp_path: Path, data_root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kamado.corpus.io.ranges import row_group_ranges

    src = (data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [{"id": None, "text": json.loads(ln)["text"]} for ln in src[:300]]
    rows[130]["text"] = None  # an unreadable row in a later row group: reported with its row number, 131
    (tmp_path / "in").mkdir()
    p = tmp_path / "in" / "web.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("text", pa.string())])), p,
                   row_group_size=40)
    split_bytes = p.stat().st_size // 4
    ranges = row_group_ranges(p, split_bytes)
    assert len(ranges) >= 3 and ranges[0].start == 0 and ranges[-1].end == 8
    assert all(a.end == b.start and b.first_row == 40 * b.start + 1 for a, b in zip(ranges, ranges[1:], strict=False))
    chain = default_chain("default-ja")
    one = run_clean([tmp_path / "in"], tmp_path / "one", chain, workers=1, data_root=data_root, quiet=True, split_bytes=0)
    split = run_clean([tmp_path / "in"], tmp_path / "split", chain, workers=2, data_root=data_root, quiet=True,
                  split_bytes=split_bytes)
    assert len(list((tmp_path / "split" / ".work").glob("done-*.json"))) == len(ranges)
    assert _records_of(tmp_path / "one") == _records_of(tmp_path / "split")
    counts = ("input", "kept", "rejected", "errors", "bytes_in", "files")
    assert {k: one[k] for k in counts} == {k: split[k] for k in counts}
    assert [json.loads(e)["line"] for e in _records_of(tmp_path / "split")["errors"]] == [131]
    ids = [json.loads(r)["id"] for sub in ("kept", "rejected") for r in _records_of(tmp_path / "split")[sub]]
    assert sorted(ids, key=lambda i: int(i.split(":")[1])) == [f"web:{n}" for n in range(1, 301) if n != 131]
