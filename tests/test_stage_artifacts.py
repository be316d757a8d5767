"""The typed artifact readers of every stage: round trips of the counts, and clear errors for bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kamado.config import KamadoError
from kamado.manifest import write_json_atomic, write_manifest
from kamado.stage import STAGES, StageContext


@pytest.mark.parametrize("spec", STAGES, ids=lambda s: s.name)
def test_every_registered_reader_exists_and_names_a_missing_folder(spec, tmp_path: Path) -> None:
    cls = spec.artifact_class()
    with pytest.raises(KamadoError, match=rf"{tmp_path / 'nope'}: no {spec.name} stage folder"):
        cls.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KamadoError, match=rf"{tmp_path / 'empty'}: not a complete {spec.name} stage folder"):
        cls.open(tmp_path / "empty")


def test_corpus_counts_round_trip_and_sources(tmp_path: Path) -> None:
    from kamado.corpus.artifacts import CorpusArtifact, CorpusCounts, CorpusSource, SourceCounts
    from kamado.corpus.docs import corpus_sources

    c = CorpusCounts()
    c.add("ja.web", SourceCounts(input=10, kept=7, rejected=2, errors=1, dedup_removed=1, final_docs=6, chain="x"))
    c.add("en", SourceCounts(input=5, kept=5, final_docs=5, mb_in=0.5))
    flat = c.to_counts()
    assert flat["input"] == 15 and flat["final_docs"] == 11 and flat["ja.web.dedup_removed"] == 1
    assert CorpusCounts.from_counts(flat) == c
    CorpusArtifact.write_sources(tmp_path, [CorpusSource("ja.web", "ja", "ja.web/dedup/kept"),
                                            CorpusSource("en", "en", "en/clean/kept")])
    write_manifest(tmp_path, stage="corpus", config={}, counts=flat)
    art = CorpusArtifact.open(tmp_path)
    assert art.names() == ["ja.web", "en"] and art.counts == c
    assert art.kept_dir("en") == tmp_path / "en" / "clean" / "kept"
    with pytest.raises(KamadoError, match="kept shards .* are missing"):
        corpus_sources(tmp_path)
    (tmp_path / "en" / "clean" / "kept").mkdir(parents=True)
    assert [s.source for s in corpus_sources(tmp_path, only=["en"])] == ["en"]
    (tmp_path / "sources.json").write_text('[{"name": "x"}]')
    with pytest.raises(KamadoError, match="entry 0 needs 'name' and 'kept'"):
        CorpusArtifact.open(tmp_path)


def test_tokenizer_counts_round_trip_and_old_nested_form(tmp_path: Path) -> None:
    from kamado.tokenizer.artifacts import TokenizerArtifact, TokenizerCounts

    flat = {"vocab_size": 8000, "chars_per_token_ja": 1.9, "chars_per_token_en": 3.8, "train_s": 1.0,
            "model_type": "unigram", "normal_form": "nfkc_ja", "sample_chars": 100, "sample_lines": 10, "byte_fallback_rate_en": 0.0,
            "unk_rate_en": 0.0, "heldout_chars_en": 50, "byte_fallback_rate_ja": 0.01, "unk_rate_ja": 0.0,
            "heldout_chars_ja": 60, "read_errors": 0, "sample_s": 0.1, "stats_s": 0.2, "sp_model": "tokenizer.model",
            "sources": {"ja": {"lang": "ja", "weight": 1.0, "sample_chars": 100, "available_chars": 200}}}
    assert TokenizerCounts.from_counts(flat).to_counts() == flat
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')
    write_manifest(tmp_path, stage="tokenizer", config={}, counts={"vocab_size": 4000, "chars_per_token": {"ja": 2.0}})
    art = TokenizerArtifact.open(tmp_path)
    assert art.counts.vocab_size == 4000 and art.counts.normal_form == "identity" and art.counts.chars_per_token == {"ja": 2.0}
    assert art.hf_config()["tokenizer_class"] == "LlamaTokenizer"


def test_pack_reader(tmp_path: Path) -> None:
    from kamado.data.artifacts import PackArtifact

    write_json_atomic(tmp_path / "pack.json", {"vocab_size": 300, "dtype": "uint16", "eos_id": 2, "bos_id": 1,
                                               "sources": {"ja": {"lang": "ja", "train_tokens": 90, "valid_tokens": 10,
                                                                  "docs": 3, "train": "ja/train.bin",
                                                                  "valid": "ja/valid.bin", "extra": 1}}})
    art = PackArtifact.open(tmp_path)
    assert art.train_tokens == 90 and art.valid_tokens == 10 and art.sources["ja"].docs == 3
    assert art.file("ja", "valid") == tmp_path / "ja" / "valid.bin"
    with pytest.raises(KamadoError, match="no source 'en'"):
        art.file("en")
    (tmp_path / "pack.json").write_text("{")
    with pytest.raises(KamadoError, match="pack.json: unreadable"):
        PackArtifact.open(tmp_path)


def test_train_counts_round_trip_and_partial_folder(tmp_path: Path) -> None:
    from kamado.train.artifacts import TrainArtifact, TrainCounts

    tc = TrainCounts.from_result({"params": 10, "steps": 3, "tokens": 300, "final_loss": 2.1234567, "other": 1})
    assert tc.final_loss == 2.12346 and TrainCounts.from_counts(tc.to_counts()) == tc
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0, "tokens": 64}\n{"step": 1, "val_loss": 3.1}\n{"st')
    art = TrainArtifact.open(tmp_path)  # still training: no manifest, no model yet
    assert art.tokens_seen() == 64 and len(art.metrics()) == 2 and not art.has_model()
    write_manifest(tmp_path, stage="pretrain", config={}, counts=tc.to_counts())
    art = TrainArtifact.open(tmp_path)
    assert art.counts == tc and art.tokens_seen() == 300 and art.hf_dir == tmp_path / "hf"


def test_tune_counts_round_trip_and_layout(tmp_path: Path) -> None:
    from kamado.tune.artifacts import TuneArtifact, TuneCounts

    methods = {m: {"val_loss_before": 3.0, "val_loss_after": 2.0, "final_train_loss": 1.5, "trainable_pct": 1.0,
                   "wall_s": 2.0, "tokens_per_s": 10.0, "hf": f"{m}/hf"} for m in ("full", "lora")}
    tc = TuneCounts.of({"train_examples": 8, "valid_examples": 2, "train_target_tokens": 99}, methods)
    flat = tc.to_counts()
    assert flat["lora_val_loss_after"] == 2.0 and TuneCounts.from_counts(flat) == tc
    (tmp_path / "full" / "hf").mkdir(parents=True)
    art = TuneArtifact.open(tmp_path)  # only a model folder: still readable
    assert art.hf_dir("full") == tmp_path / "full" / "hf" and art.methods == {}
    write_json_atomic(tmp_path / "tune.json", {"methods": methods, "data": {"train_examples": 8}})
    art = TuneArtifact.open(tmp_path)
    assert art.method_names() == ["full", "lora"] and art.hf_dir("lora") == tmp_path / "lora" / "hf"


def test_eval_write_open_round_trip(tmp_path: Path) -> None:
    from kamado.eval.artifacts import EvalArtifact

    art = EvalArtifact(tmp_path, {"tune/full": {"jcommonsenseqa": {"acc": 0.5, "n": 4}, "perplexity":
                                                {"char_ppl_ja": float("nan")}}}, ["jcommonsenseqa", "perplexity"])
    art.write()
    back = EvalArtifact.open(tmp_path)
    assert back.models["tune/full"]["perplexity"]["char_ppl_ja"] is None  # strict JSON
    assert back.details == {"tune/full": "details/tune-full"}
    assert back.to_counts() == {"models": 1, "tasks": 2, "tune/full.jcommonsenseqa.acc": 0.5}
    (tmp_path / "results.json").write_text(json.dumps({"tasks": []}))
    with pytest.raises(KamadoError, match="no 'models' mapping"):
        EvalArtifact.open(tmp_path)


def test_report_counts_round_trip(tmp_path: Path) -> None:
    from kamado.report.artifacts import ReportArtifact, ReportCounts

    rc = ReportCounts(sections=8, sections_missing=1, plots=3, bytes=100, missing="tune")
    (tmp_path / "report.html").write_text("<html></html>")
    write_manifest(tmp_path, stage="report", config={}, counts=rc.to_counts())
    assert ReportArtifact.open(tmp_path).counts == rc


def test_stage_context_artifact_reads_upstream(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_json_atomic(tmp_path / "data" / "pack.json", {"vocab_size": 300, "dtype": "uint16", "sources": {}})
    ctx = StageContext("pretrain", tmp_path / "pretrain", inputs={"data": tmp_path / "data"})
    assert ctx.artifact("data").vocab_size == 300
    with pytest.raises(KamadoError, match="needs the output of stage 'tokenizer'"):
        ctx.artifact("tokenizer")


def test_atomic_writes_from_threads_leave_one_whole_file(tmp_path: Path) -> None:
    """The one atomic write (manifest.write_text_atomic / write_json_atomic): threads of one process writing the same
    file (the judge's reply cache) each replace it whole, and no temporary file is left."""
    import threading

    from kamado.manifest import write_json_atomic

    p = tmp_path / "sub" / "x.json"
    docs = [{"i": i, "text": "日本" * 20_000} for i in range(8)]
    threads = [threading.Thread(target=write_json_atomic, args=(p, d)) for d in docs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(p.read_text(encoding="utf-8")) in docs
    assert [q.name for q in p.parent.iterdir()] == ["x.json"]
