"""Token packing: real tokenizer on real data, parallel == serial, skip when unchanged, damage detection."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kamado.config import KamadoError
from kamado.corpus.docs import corpus_sources, resolve_inputs
from kamado.data.config import PackConfig
from kamado.data.pack import check_pack, dtype_for, pack
from kamado.manifest import write_manifest
from kamado.tokenizer.config import TokenizerConfig
from kamado.tokenizer.train import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ["ja=fineweb2-ja", "ja=mc4-ja-labeled", "en=alice"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    out = tmp_path_factory.mktemp("ptok")
    cfg = TokenizerConfig(vocab_size=2000, sample_chars=200_000, character_coverage=0.99, weights={"ja": 0.5, "en": 0.5})
    train_tokenizer(resolve_inputs(["ja-wikipedia", "alice"], data_root), cfg, out, seed=1)
    return out


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory, tok_dir: Path, data_root: Path) -> Path:
    out = tmp_path_factory.mktemp("pack")
    counts = pack(resolve_inputs(INPUTS, data_root), tok_dir, out, PackConfig(workers=2, valid_fraction=0.05,
                                                                               batch_chars=50_000))
    assert not counts["skipped"]
    write_manifest(out, stage="data", config={}, counts=counts)
    return out


def test_pack_holds_exact_tokens_index_and_counts(packed: Path, tok_dir: Path, data_root: Path) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    doc = check_pack(packed)
    assert doc["dtype"] == "uint16" and doc["vocab_size"] == 2000 and set(doc["sources"]) == {"ja", "en"}
    texts = [json.loads(x)["text"] for x in (data_root / "ja_web_noisy/fineweb2_edu_ja_docs.jsonl").open()]
    texts += [json.loads(x)["text"] for x in (data_root / "ja_web_noisy/mc4ja_paragraphs_labeled.jsonl").open()]
    ja = doc["sources"]["ja"]
    assert ja["docs"] == len(texts) and ja["valid_docs"] == len(texts[::20])
    want_train = [t for i, t in enumerate(texts) if i % 20]
    train = np.fromfile(packed / ja["train"], dtype=np.uint16)
    idx = np.load(packed / ja["train_idx"])
    assert len(train) == ja["train_tokens"] and len(idx) == len(want_train) and idx[0] == 0
    for k in (0, 1, len(want_train) - 1):  # document k sits at idx[k] and ends with EOS
        ids = sp.encode(want_train[k]) + [sp.eos_id()]
        assert train[idx[k]: idx[k] + len(ids)].tolist() == ids
    valid = np.fromfile(packed / ja["valid"], dtype=np.uint16)
    first = sp.encode(texts[0]) + [sp.eos_id()]
    assert valid[: len(first)].tolist() == first
    assert sum(len(sp.encode(t)) + 1 for t in texts) == ja["train_tokens"] + ja["valid_tokens"]
    assert dtype_for(65535) == "uint16" and dtype_for(65536) == "uint32"


def test_serial_and_parallel_pack_are_identical_and_unchanged_input_is_skipped(
        packed: Path, tok_dir: Path, tmp_path: Path, data_root: Path) -> None:
    specs = resolve_inputs(INPUTS, data_root)
    one = pack(specs, tok_dir, tmp_path, PackConfig(workers=1, valid_fraction=0.05, batch_chars=50_000))
    for src in ("ja", "en"):
        for f in ("train.bin", "valid.bin", "train.idx.npy"):
            assert (tmp_path / src / f).read_bytes() == (packed / src / f).read_bytes()
    again = pack(specs, tok_dir, tmp_path, PackConfig(workers=1, valid_fraction=0.05, batch_chars=50_000))
    assert again["skipped"] and again["tokens"] == one["tokens"]
    changed = pack(specs, tok_dir, tmp_path, PackConfig(workers=1, valid_fraction=0.1))
    assert not changed["skipped"] and changed["valid_tokens"] > one["valid_tokens"]


def test_corrupt_or_truncated_token_files_are_detected(packed: Path, tmp_path: Path) -> None:
    import shutil

    from kamado.data.loader import MixtureSampler

    bad = tmp_path / "pack"
    shutil.copytree(packed, bad)
    check_pack(bad)
    f = bad / "ja" / "train.bin"
    with open(f, "r+b") as fh:  # same size, one token changed: only the manifest digest can tell
        fh.seek(100)
        b = fh.read(1)
        fh.seek(100)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(KamadoError, match=r"ja/train.bin does not match the digest in manifest.json"):
        check_pack(bad)
    os.truncate(f, f.stat().st_size - 6)
    with pytest.raises(KamadoError, match=r"ja/train.bin has .* bytes, expected .*truncated"):
        MixtureSampler(bad, None, seq_len=16, micro_batch=2, total_steps=4, seed=0)
    (bad / "en" / "valid.bin").unlink()
    with pytest.raises(KamadoError, match=r"(?s)en/valid.bin is missing.*re-pack"):
        check_pack(bad)


def test_stage_reads_corpus_sources_json(tmp_path: Path, tok_dir: Path, data_root: Path) -> None:
    from kamado.data.stage import run
    from kamado.stage import StageContext

    corpus = tmp_path / "corpus"
    for name, lang, src in (("ja_web", "ja", "ja_web_noisy/fineweb2_edu_ja_docs.jsonl"),
                            ("en_books", "en", "en_text/alice_in_wonderland.txt")):
        (corpus / name / "kept").mkdir(parents=True)
        lines = (data_root / src).read_text(encoding="utf-8").splitlines()
        recs = ([json.loads(x)["text"] for x in lines] if src.endswith(".jsonl")
                else ["\n".join(lines[i:i + 200]) for i in range(0, len(lines), 200)])
        with gzip.open(corpus / name / "kept" / "part-00000.jsonl.gz", "wt", encoding="utf-8") as f:
            for i, t in enumerate(recs):
                f.write(json.dumps({"id": str(i), "text": t, "source": name, "lang": lang, "meta": {}}) + "\n")
    (corpus / "sources.json").write_text(json.dumps([{"name": "ja_web", "lang": "ja", "kept": "ja_web/kept"},
                                                     {"name": "en_books", "lang": "en", "kept": "en_books/kept"}]))
    assert [s.source for s in corpus_sources(corpus)] == ["ja_web", "en_books"]
    out = tmp_path / "data"
    out.mkdir()
    ctx = StageContext(name="data", out=out, inputs={"corpus": corpus, "tokenizer": tok_dir})
    counts = run(PackConfig(workers=1), ctx)
    assert counts["train_tokens/ja_web"] > 0 and counts["train_tokens/en_books"] > 0
    assert counts["per_source"]["en_books"]["lang"] == "en"
    json.dumps(counts)


@pytest.mark.slow
def test_cli_pack_writes_manifest_with_token_counts(tmp_path: Path, tok_dir: Path) -> None:
    env = os.environ | {"KAMADO_QUIET": "1", "COLUMNS": "200"}
    out = tmp_path / "pack"
    cmd = [sys.executable, "-m", "kamado.cli", "data", "pack", "ja=fineweb2-ja", "en=alice", "--tokenizer",
           str(tok_dir), "--out", str(out), "--workers", "2"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"]["train_tokens/ja"] > 0 and man["counts"]["train_tokens/en"] > 0
    assert "tokens/s" in r.stderr and "│ ja" in r.stderr
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "up to date" in r.stderr
    os.truncate(out / "en" / "train.bin", 10)
    r = subprocess.run([sys.executable, "-c", "import sys; from kamado.data.loader import valid_batches; "
                        "valid_batches(sys.argv[1], 16, 2, 2, verify=True)", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "truncated" in r.stderr
