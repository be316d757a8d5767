"""The web-ja / curated-ja chains, the packaged quality model, and the per-filter table on labelled text."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kamado.corpus.config import default_chain
from kamado.corpus.inspect.labelled import filter_table, format_table
from kamado.corpus.io.documents import Document
from kamado.corpus.io.readers import read_shard
from kamado.corpus.steps.base import Env
from kamado.corpus.steps.chain import Pipeline
from kamado.corpus.steps.quality import QualityModel, packaged_model_dir


def test_packaged_web_ja_model_has_its_cv_figures() -> None:
    folder = packaged_model_dir("web-ja")
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cv = meta["cv"]
    assert cv["folds"] == 5 and cv["seeds"] >= 3 and "near_duplicates" in cv
    for k in ("classifier", "chain"):
        assert 0.4 < cv[k]["mcc"] < 1 and cv[k]["mcc_fold_std"] > 0
    m = QualityModel.load(folder)
    s = m.score(["東京は日本の首都であり、多くの人が暮らしている。交通網も発達している。",
                 "激安 送料無料 ポイント10倍 今すぐクリック 激安 送料無料 ポイント10倍"])
    assert s[0] > s[1]


def test_web_ja_chain_on_web_paragraphs(data_root: Path) -> None:
    pipe = Pipeline(default_chain("web-ja"), Env(data_root))
    docs = [d for d in read_shard(data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl")][:200]
    by = [pipe.process(d)[1] for d in docs]
    assert "quality" in by and None in by
    kept = [d for d, b in zip(docs, by, strict=True) if b is None]
    assert all(0.5 <= d.meta["measures"]["quality"]["quality"] for d in kept)


def test_curated_ja_keeps_wikipedia_and_aozora(data_root: Path) -> None:
    pipe = Pipeline(default_chain("curated-ja"), Env(data_root))
    names = ["aozora_pd_works_clean.jsonl.gz", "jaquad_train_wikipedia_paragraphs.jsonl.gz"]
    docs = [d for n in names for d in list(read_shard(data_root / "ja_text" / n))[:60]]
    assert all(pipe.process(d)[1] is None for d in docs)
    assert pipe.process(Document("x", "This is an English sentence about nothing in particular.", "t"))[1]


def test_filter_table_on_labelled_paragraphs(tmp_path: Path, data_root: Path) -> None:
    src = data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl"
    small = tmp_path / "lab.jsonl"
    small.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:150]), encoding="utf-8")
    t = filter_table(default_chain("default-ja"), Env(data_root), [small])
    assert t["paragraphs"] == 150 and t["rejected"] == sum(r["first_good"] + r["first_bad"] for r in t["filters"])
    assert any(r["alone_bad"] for r in t["filters"])
    assert "ng_adult" in format_table(t)

    from kamado.cli import app

    res = CliRunner().invoke(app, ["corpus", "inspect", "--labelled", str(small), "--recipe", "hojichar-compat",
                                   "--data-root", str(data_root)])
    assert res.exit_code == 0, res.output
    assert "kana_start" in res.output and "MCC" in res.output


def test_source_chain_overrides_the_corpus_chain(tmp_path: Path) -> None:
    from kamado.corpus.config import CorpusConfig
    from kamado.corpus.stage import chain_for

    cfg = CorpusConfig.model_validate({"chain": "default", "sources": [
        {"name": "ja_web", "lang": "ja", "inputs": ["mc4-ja-labeled"], "chain": "web-ja"},
        {"name": "ja_curated", "lang": "ja", "inputs": ["aozora"], "chain": "curated-ja"},
        {"name": "en", "lang": "en", "inputs": ["alice"]}]})

    class Ctx:
        recipe_dir = None

    names = [chain_for(cfg, s, Ctx())[0].name for s in cfg.sources]  # type: ignore[arg-type]
    assert names == ["web-ja", "curated-ja", "default-en"]
