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
from kamado.corpus import quality as Q


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
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "weights.npy"]
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
    from kamado.corpus.io import Document
    from kamado.corpus.pipeline import Pipeline
    from kamado.corpus.steps import Env

    texts, labels = labelled
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
