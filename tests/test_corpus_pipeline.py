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
from kamado.corpus.executors import clean

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
    s1 = clean([inp], tmp_path / "w1", chain, workers=1, data_root=data_root, quiet=True)
    s2 = clean([inp], tmp_path / "w2", chain, workers=2, data_root=data_root, quiet=True)
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
    clean([inp], out, chain, workers=1, data_root=data_root, quiet=True)
    ref = _contents(out)
    # simulate a job killed while shard 2 was being written: its marker gone, a partial file left behind
    (out / ".work" / "done-00002.json").unlink()
    for p in (out / "kept").glob("part-00002-*.jsonl.gz"):
        p.write_bytes(b"garbage")
    (out / "kept" / ".part-00002-00001.jsonl.gz.tmp").write_bytes(b"partial")
    before = {p.name: p.stat().st_mtime_ns for p in (out / "kept").glob("part-00000-*")}
    clean([inp], out, chain, workers=1, data_root=data_root, quiet=True)
    assert _contents(out) == ref
    assert {p.name: p.stat().st_mtime_ns for p in (out / "kept").glob("part-00000-*")} == before  # untouched
    assert not list((out / "kept").glob(".*.tmp"))
    _check_accounting(out)
    with pytest.raises(KamadoError, match="different clean job"):
        clean([inp / "web-0.jsonl"], out, chain, workers=1, data_root=data_root, quiet=True)


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
    s1 = clean([d], tmp_path / "a", chain, workers=1, quiet=True)
    s2 = clean([d], tmp_path / "b", chain, workers=2, quiet=True)
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
