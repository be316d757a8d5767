"""Quality classifier on the human-labelled mC4 paragraphs: leak-free cross-validation beats chance, models
round-trip through .npy/.json (no pickles), the CLI trains and saves, and the filter step scores documents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from kamado.cli.corpus_dedup import train_classifier
from kamado.config import KamadoError
from kamado.corpus.steps import quality as Q


@pytest.fixture(scope="module")
def labelled(data_root: Path) -> tuple[list[str], np.ndarray]:
    return Q.load_labelled([data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl"])


def test_folds_keep_near_duplicates_together(labelled: tuple[list[str], np.ndarray]) -> None:
    texts, labels = labelled
    texts = texts[:300] + [t + "。" for t in texts[:20]]  # near copies of the first 20
    labels = np.concatenate([labels[:300], labels[:20]])
    fold = Q.folds_for(texts, labels, 4)
    assert (fold[:20] == fold[300:]).all()
    assert set(np.bincount(fold, minlength=4)) and np.bincount(fold).min() > 50


@pytest.mark.slow
def test_cross_validated_classifier_beats_chance(labelled: tuple[list[str], np.ndarray]) -> None:
    texts, labels = labelled
    cfg = Q.ClassifierConfig(epochs=4)
    cv = Q.cross_validate(texts, labels, cfg, folds=3)
    assert cv["balanced_accuracy"] > 0.65 and cv["mcc"] > 0.3 and cv["auc"] > 0.72, cv
    shuffled = np.random.default_rng(0).permutation(labels)  # labels carry the signal, not the features
    cv0 = Q.cross_validate(texts, shuffled, cfg, folds=3)
    assert cv0["mcc"] < 0.15 and abs(cv0["auc"] - 0.5) < 0.1


def test_metrics_and_auc_by_hand() -> None:
    m = Q.metrics(np.array([1, 1, 0, 0, 0], bool), np.array([1, 0, 0, 0, 1], bool))
    assert m["balanced_accuracy"] == pytest.approx(0.5 * (0.5 + 2 / 3))
    assert m["mcc"] == pytest.approx((1 * 2 - 1 * 1) / np.sqrt(2 * 2 * 3 * 3))
    assert Q.auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert Q.auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)


def test_model_round_trip_without_pickles(labelled: tuple[list[str], np.ndarray], tmp_path: Path) -> None:
    texts, labels = labelled
    model = Q.train(texts[:400], labels[:400], Q.ClassifierConfig(epochs=2, buckets=1 << 14))
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "idf.npy", "weights.npy"]
    again = Q.QualityModel.load(tmp_path / "m")
    a, b = model.score(texts[400:450]), again.score(texts[400:450])
    assert np.allclose(a, b, atol=1e-5) and ((a > 0) & (a < 1)).all()
    with pytest.raises(KamadoError):
        Q.QualityModel.load(tmp_path / "missing")


def test_train_classifier_cli(data_root: Path, tmp_path: Path) -> None:
    src = data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl"
    lines = src.read_text(encoding="utf-8").splitlines()[:500]
    part = tmp_path / "part.jsonl"
    part.write_text("\n".join(lines) + "\n", encoding="utf-8")
    app = typer.Typer()
    app.command("train-classifier")(train_classifier)
    app.command("other")(lambda: None)
    r = CliRunner().invoke(app, ["train-classifier", str(part), "--out", str(tmp_path / "m"), "--folds", "3",
                                 "--epochs", "3"])
    assert r.exit_code == 0, r.output
    assert "cv MCC" in r.output
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["cv"]["folds"] == 3 and len(cfg["score_quantiles"]) == 101
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "maybe"}\n', encoding="utf-8")
    r = CliRunner().invoke(app, ["train-classifier", str(bad), "--out", str(tmp_path / "m2")])
    assert r.exit_code != 0 and "bad.jsonl:1" in str(r.exception)


def test_quality_filter_step_in_a_pipeline(labelled: tuple[list[str], np.ndarray], tmp_path: Path) -> None:
    from kamado.corpus.config import ChainConfig
    from kamado.corpus.io.documents import Document
    from kamado.corpus.steps.base import Env
    from kamado.corpus.steps.chain import Pipeline

    texts, labels = labelled
    order = np.random.default_rng(0).permutation(len(texts))  # the file's slices differ in make-up
    texts, labels = [texts[i] for i in order], labels[order]
    model, _ = Q.train_with_cv(texts[:600], labels[:600], Q.ClassifierConfig(epochs=3), folds=3)
    model.save(tmp_path / "m")
    chain = ChainConfig(steps=[{"type": "quality_classifier", "model": str(tmp_path / "m"), "threshold": 0.5}])
    pipe = Pipeline(chain, Env())
    held = texts[600:800]
    want = model.score(held)
    for t, s in zip(held, want, strict=True):
        doc, by, reason = pipe.process(Document("d", t, "web"))
        assert doc.meta["quality"] == pytest.approx(s, abs=1e-4)
        assert (by == "quality_classifier") == (s < 0.5)
        assert by is None or reason.startswith("low_quality:")
    top = Pipeline(ChainConfig(steps=[{"type": "quality_classifier", "model": str(tmp_path / "m"),
                                       "keep_fraction": 0.3}]), Env())
    kept = sum(top.process(Document("d", t, "web"))[1] is None for t in held)
    assert 0.1 * len(held) < kept < 0.55 * len(held)


def test_word_runs_split_on_character_class() -> None:
    assert Q.word_runs("写真を撮影します。ABC 123円!!") == ["写真", "を", "撮影", "します", "。", "ABC", "123", "円", "!!"]
    assert Q.word_runs("") == [] and Q.word_runs("   ") == []
    toks = Q._word_tokens("東京へ行く")
    assert toks[:3] == ["東京", "へ", "行"] and "東京\x00へ" in toks and len(toks) == 4 + 3


def test_idf_drops_rare_ngrams_but_keeps_word_runs(labelled: tuple[list[str], np.ndarray]) -> None:
    texts = ["今日は晴れです。", "今日は雨です。", "今日は曇りです。", "明日は雪。"]
    cfg = Q.ClassifierConfig(buckets=1 << 16, min_df=2)
    idf = Q.inverse_document_frequency(texts, cfg)
    r, c, v, n = Q.featurize(texts, cfg, idf)
    assert n == 4 and (v > 0).all() and (idf >= 0).all()
    # the word run 晴れ... is kept (no min_df there); the rare 2-gram 晴れ of the n-gram block is not
    one = Q.ClassifierConfig(buckets=1 << 16, min_df=1, word_runs=False)
    two = Q.ClassifierConfig(buckets=1 << 16, min_df=2, word_runs=False)
    kept1 = np.count_nonzero(Q.inverse_document_frequency(texts, one))
    kept2 = np.count_nonzero(Q.inverse_document_frequency(texts, two))
    assert kept2 < kept1
    # per block the rows are unit vectors: the squared norm per document is the number of blocks
    sq = np.bincount(r, v * v, minlength=n)
    assert np.allclose(sq, 2.0)
    # common buckets weigh less than rare ones
    blocks, _ = Q._blocks(texts, one)
    rr, cc, _cnt = blocks[0]
    df = np.bincount(cc, minlength=one.buckets)
    idf1 = Q.inverse_document_frequency(texts, one)
    assert idf1[cc[df[cc] == 4][0]] < idf1[cc[df[cc] == 1][0]]


def test_version_1_models_load_as_before(labelled: tuple[list[str], np.ndarray], tmp_path: Path) -> None:
    texts, labels = labelled
    legacy = Q.ClassifierConfig(epochs=2, buckets=1 << 14, **Q._LEGACY)
    model = Q.train(texts[:300], labels[:300], legacy)
    assert model.idf is None
    model.save(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    for k in Q._LEGACY:  # as written before these settings existed
        del cfg["config"][k]
    cfg["version"] = 1
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    again = Q.QualityModel.load(tmp_path / "old")
    assert not again.cfg.word_runs and not again.cfg.idf and again.idf is None
    assert np.allclose(model.score(texts[300:340]), again.score(texts[300:340]), atol=1e-5)
    new = Q.train(texts[:300], labels[:300], Q.ClassifierConfig(epochs=2, buckets=1 << 14))
    new.save(tmp_path / "new")
    (tmp_path / "new" / "idf.npy").unlink()
    with pytest.raises(KamadoError, match="idf"):
        Q.QualityModel.load(tmp_path / "new")
