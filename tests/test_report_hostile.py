"""A run folder full of hostile strings: every name, value, key and count the report reads carries markup that
would run a script; the page shows it as text (one escaping rule, ``report.html.esc``) and, in headless
Chromium, no script but the report's own runs.

The run folder is written here in the stages' formats (no training needed)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report_browser import CHROMIUM, _chromium, _run  # noqa: E402

# markup that marks the page when it runs: an event handler, a script, and an attribute breakout
P = ("<img src=x onerror=\"document.documentElement.setAttribute('data-xss','img')\">"
     "<script>document.documentElement.setAttribute('data-xss','script')</script>"
     "\"' onmouseover='document.documentElement.setAttribute(\"data-xss\",\"attr\")'")


def poison(o, keys: bool = False):
    """Every string (and ``n`` field) replaced by the payload; with ``keys``, mapping keys get it appended."""
    if isinstance(o, dict):
        return {(f"{k}{P}" if keys else k): (P if k == "n" else poison(v, keys)) for k, v in o.items()}
    if isinstance(o, list):
        return [poison(v, keys) for v in o]
    return P if isinstance(o, str) else o


def hostile_run(root: Path) -> Path:
    from kamado.manifest import write_json_atomic, write_manifest

    run = _run(root, "run" + P.replace("/", "_")[:40], 120, 0.1, spike=60)
    write_json_atomic(run / "recipe.json", poison({"name": "x", "corpus": {"sources": [{"name": "a"}]}}, keys=True))
    (run / "corpus" / "src").mkdir(parents=True)
    write_json_atomic(run / "corpus" / "sources.json", [{"name": P, "lang": P, "kept": "src/kept"}])
    write_json_atomic(run / "corpus" / "src" / "stats.json", {
        "input": 10, "kept": 7, "rejected": 2, "errors": 1, "reasons": {P: 2},
        "steps": [{"name": P, "input": 10, "rejected": 2, "reasons": {P: 2}}]})
    (run / "data" / "src").mkdir(parents=True)
    write_json_atomic(run / "data" / "pack.json", {
        "vocab_size": 100, "dtype": "uint16", "eos_id": 2, "bos_id": 1,
        "sources": {P: {"lang": P, "train_tokens": 10, "valid_tokens": 2, "docs": 3, "train": P, "valid": P}}})
    write_json_atomic(run / "tune" / "tune.json", {
        "base": P, "data": {"examples": 5, P: P, "sources": {P: 5}}, "chat_template": P,
        "methods": {m: {"trainable_params": 10, "lr": P, "wall_s": 1.0, "final_loss": 1.0, P: P}
                    for m in ("full", "lora")}})
    results = {P: {P: {"acc": 0.5, "acc_stderr": 0.1, "n": P, P: P}, "perplexity": {"bpc_ja": 1.2, "n": 4}},
               "pretrain": {P: {"acc": 0.4, "n": 3}, "perplexity": {"bpc_ja": 1.4, "n": 4}}}
    (run / "eval").mkdir()
    write_json_atomic(run / "eval" / "results.json", {"models": results, "settings": {P: P}, "details": {P: P}})
    (run / "eval" / P.replace("/", "_")[:60]).write_text("x")  # a file name shown in "other files"
    for stage in ("corpus", "tokenizer", "data", "pretrain", "tune", "eval"):
        (run / stage).mkdir(exist_ok=True)
        write_manifest(run / stage, stage=stage, config=poison({"a": "b", "c": {"d": "e"}}, keys=True),
                       counts=poison({"docs": "x", "n": 3, "nested": {"k": "v"}}, keys=True),
                       timings={"wall_s": P}, extra={"git_commit": P, "finished_at": P, "host": P,
                                                     "versions": {P: P}})
    # pretrain / tune metrics and guard events with hostile text
    with open(run / "pretrain" / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": 121, "loss": 2.0, "event": P, P: 1.0}) + "\n")
    with open(run / "pretrain" / "events.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": 100, "kind": P, "detail": {P: P}}) + "\n")
        f.write(json.dumps({"step": 110, "kind": "rollback", "detail": P}) + "\n")
    return run


def test_hostile_strings_are_text_on_the_page(tmp_path: Path):
    from kamado.report.stage import build_report

    a = hostile_run(tmp_path / "a")
    b = hostile_run(tmp_path / "b")
    doc, _ = build_report([a, b], title=P)
    body = doc.replace('<script id="kamado-charts">', "")
    assert "<img src=x" not in doc and "<script>document" not in doc and "<script" not in body
    assert not re.search(r"""['"] onmouseover=""", doc)  # no quote breaks out of an attribute
    # the hostile values did reach the page (as text): names, counts, results, n, manifests, title
    assert doc.count("&lt;img src=x onerror=") >= 40
    assert re.search(r"\(n=[^)]*&lt;img src=x", doc), "the n field of results.json is shown, escaped"

    if CHROMIUM is None:
        pytest.skip("no chromium (apt-get install chromium): the browser half of this test did not run")
    page = tmp_path / "report.html"
    page.write_text(doc, encoding="utf-8")
    r = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    dom = r.stdout
    assert r.returncode == 0 and "<html" in dom, r.stderr[-2000:]
    html_tag = re.search(r"<html[^>]*>", dom).group(0)
    assert "data-xss" not in html_tag, html_tag  # no hostile script or handler ran
    assert "data-kc-errors" not in html_tag, html_tag  # the report's own chart script ran without errors
    assert "data-kc-charts" in html_tag
    assert not re.search(r'<img[^>]*\ssrc="x"', dom)  # no element made from the hostile text
    assert dom.count("<script") == 1  # the report's own chart script only
