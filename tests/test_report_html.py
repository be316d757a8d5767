"""Report robustness: partial and broken run folders, escaping, number formatting (fast, no training)."""

from __future__ import annotations

import json

from test_report_stage import check_html, pngs


def test_report_of_partial_and_broken_run(tmp_path):
    """Missing inputs become notes; a corrupt file costs only its own section."""
    from kamado.report.stage import build_report

    run = tmp_path / "partial"
    (run / "pretrain").mkdir(parents=True)
    (run / "pretrain" / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 5.0, "tokens_per_s": 10}\n{"step": 2, "loss": 4.0, "tokens_per_s": 12}\n{"step": 3, "lo',
        encoding="utf-8")
    (run / "eval").mkdir()
    (run / "eval" / "results.json").write_text("{not json", encoding="utf-8")
    (run / "corpus").mkdir()
    (run / "corpus" / "stats.json").write_text('{"input": "many"}', encoding="utf-8")
    doc, counts = build_report([run])
    text = "".join(check_html(doc).text)
    assert "no tune stage in this run" in text
    assert "eval/results.json missing or without models" in text
    assert "partial (no manifest)" in text
    assert len(pngs(doc)) >= 1  # the two readable loss records still make a curve
    assert counts["sections_missing"] >= 4


def test_results_table_escapes_and_marks_best(tmp_path):
    from kamado.report.stage import build_report

    run = tmp_path / "r"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "results.json").write_text(json.dumps({"models": {
        "<script>alert(1)</script>": {"jcommonsenseqa": {"acc": 0.25, "n": 200}, "perplexity": {"ppl_ja": 80.0}},
        "tune/full": {"jcommonsenseqa": {"acc": 0.31, "n": 200}, "perplexity": {"ppl_ja": 95.5}}}}), encoding="utf-8")
    doc, counts = build_report([run])
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


def _charts(doc: str) -> list[dict]:
    import html
    import re

    return [json.loads(html.unescape(m)) for m in re.findall(r'<div class="kc" data-chart="([^"]*)"', doc)]


def _guarded_run(root, name: str, rollback: bool):
    """A pretrain folder as the guard leaves it: after a rollback at step 8 to the checkpoint of step 5, steps 6..8
    are logged again (the later records are the valid ones)."""
    run = root / name
    (run / "pretrain").mkdir(parents=True)
    recs = [{"step": s, "loss": 5.0 - 0.1 * s} for s in range(1, 9)]
    if rollback:
        recs[5:8] = [{"step": s, "loss": 50.0} for s in (6, 7, 8)]  # the spike, then done again
        recs += [{"step": s, "loss": 5.0 - 0.1 * s + 0.01} for s in range(6, 13)]
        ev = [{"step": 0, "kind": "started", "detail": {"resumed": False}},
              {"step": 6, "kind": "spike", "detail": {"loss": 50.0, "z": 40.0}},
              {"step": 8, "kind": "rollback", "detail": {"from_step": 5, "to_step": 8, "steps_lost": 3}},
              {"step": 12, "kind": "finished", "detail": {}}]
        (run / "pretrain" / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev), encoding="utf-8")
    else:
        recs += [{"step": s, "loss": 5.0 - 0.1 * s} for s in range(9, 13)]
    (run / "pretrain" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return run


def test_compare_overlays_runs_with_their_guard_events(tmp_path):
    """`kamado report A B`: each run's guard events on the shared loss chart, in the run's colour, the rollback's
    redone steps shaded; a step logged twice (after the rollback) is drawn once, with its later value."""
    from kamado.report.stage import build_report

    a, b = _guarded_run(tmp_path, "clean", False), _guarded_run(tmp_path, "drill", True)
    doc, _ = build_report([a, b])
    check_html(doc)
    loss = [c for c in _charts(doc) if c["title"] == "pretraining loss"]
    assert len(loss) == 1
    chart = loss[0]
    colors = {s["label"]: s["color"] for s in chart["series"]}
    assert set(colors) == {"clean", "drill"} and colors["clean"] != colors["drill"]
    drill = next(s for s in chart["series"] if s["label"] == "drill")
    assert drill["x"] == list(range(1, 13)) and max(drill["y"]) < 5  # the spiked records were replaced
    assert drill["y"][6] == 5.0 - 0.7 + 0.01
    ev = chart["events"]
    assert [(e["kind"], e["run"], e["color"]) for e in ev] == [("spike", "drill", colors["drill"]),
                                                               ("rollback", "drill", colors["drill"])]
    assert ev[1]["span"] == [5.0, 8.0] and "span" not in ev[0]
    # the single-run section of the same run: the same dedup, all events (started/finished too) marked
    single, _ = build_report([b])
    one = next(c for c in _charts(single) if c["title"] == "training loss")
    assert one["series"][0]["x"] == list(range(1, 13))
    assert [e["kind"] for e in one["events"]] == ["started", "spike", "rollback", "finished"]
