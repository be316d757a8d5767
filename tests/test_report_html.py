"""Report robustness: partial and broken run folders, escaping, number formatting (fast, no training)."""

from __future__ import annotations

import json

from test_report_stage import check_html, pngs


def test_report_of_partial_and_broken_run(tmp_path):
    """Missing inputs become notes; a corrupt file costs only its own section."""
    from kamado.report.stage import build

    run = tmp_path / "partial"
    (run / "pretrain").mkdir(parents=True)
    (run / "pretrain" / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 5.0, "tokens_per_s": 10}\n{"step": 2, "loss": 4.0, "tokens_per_s": 12}\n{"step": 3, "lo',
        encoding="utf-8")
    (run / "eval").mkdir()
    (run / "eval" / "results.json").write_text("{not json", encoding="utf-8")
    (run / "corpus").mkdir()
    (run / "corpus" / "stats.json").write_text('{"input": "many"}', encoding="utf-8")
    doc, counts = build([run])
    text = "".join(check_html(doc).text)
    assert "no tune stage in this run" in text
    assert "eval/results.json missing or without models" in text
    assert "partial (no manifest)" in text
    assert len(pngs(doc)) >= 1  # the two readable loss records still make a curve
    assert counts["sections_missing"] >= 4


def test_results_table_escapes_and_marks_best(tmp_path):
    from kamado.report.stage import build

    run = tmp_path / "r"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "results.json").write_text(json.dumps({"models": {
        "<script>alert(1)</script>": {"jcommonsenseqa": {"acc": 0.25, "n": 200}, "perplexity": {"ppl_ja": 80.0}},
        "tune/full": {"jcommonsenseqa": {"acc": 0.31, "n": 200}, "perplexity": {"ppl_ja": 95.5}}}}), encoding="utf-8")
    doc, counts = build([run])
    check_html(doc)
    assert "<script>" not in doc and "&lt;script&gt;" in doc
    assert '<td class="best">0.31</td>' in doc  # accuracy: higher is better
    assert '<td class="best">80</td>' in doc  # perplexity: lower is better
    assert "jcommonsenseqa" in doc and "(n=200)" in doc
    assert len(pngs(doc)) == 1


def test_fmt():
    from kamado.report.html import fmt

    assert fmt(1234567) == "1,234,567"
    assert fmt(0.123456) == "0.1235"
    assert fmt(2.5e-5) == "2.5e-05"
    assert fmt(None) == "—"
    assert fmt(True) == "yes"
