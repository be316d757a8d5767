"""How a chain's filters fall on human-labelled paragraphs (``{"text", "label": good|bad}`` JSONL).

For every filter: how many good and bad paragraphs it would reject on its own (``alone``) and how many it
rejects first in chain order (``first``, what ``rejected_by`` names), with the share of its rejections that
are labelled bad (``precision_bad``; the base rate is the share of bad paragraphs). The chain's totals give
the Matthews correlation of "rejected" with "labelled bad". ``kamado corpus inspect --labelled FILE
--recipe CHAIN`` prints it.

A learned filter scored on the paragraphs it was trained on looks better than it is: for the packaged
``web-ja`` classifier use the cross-validated figures stored with it (``kamado corpus inspect`` prints them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kamado.corpus.config import ChainConfig
from kamado.corpus.steps.base import Analysis, Cleaner, Env, Filter


def filter_table(chain: ChainConfig, env: Env, paths: list[Path]) -> dict[str, Any]:
    """Per-filter hits on good and bad paragraphs, and the chain's rejections against the labels."""
    from kamado.corpus.steps.chain import build_steps
    from kamado.corpus.steps.quality import load_labelled, metrics

    texts, labels = load_labelled(paths)
    steps = build_steps(chain, env)
    rows = {s.name: {"step": s.name, "type": getattr(s, "type_name", s.kind), "alone_good": 0, "alone_bad": 0,
                     "first_good": 0, "first_bad": 0} for s in steps if isinstance(s, Filter)}
    rejected = []
    for text, lab in zip(texts, labels.tolist(), strict=True):
        good = "good" if lab == 1 else "bad"
        a: Analysis | None = None
        lang = None
        first = None
        for s in steps:
            if s.only_lang is not None and lang != s.only_lang:
                continue
            if isinstance(s, Cleaner):
                text = s.rewrite(text)
                a = None
                continue
            assert isinstance(s, Filter)
            if a is None:
                a = Analysis(text)
            m = s.measure(a, None)
            if "lang" in m:
                lang = str(m["lang"])
            if s.decide(m) is not None:
                rows[s.name][f"alone_{good}"] += 1
                if first is None:
                    first = s.name
                    rows[s.name][f"first_{good}"] += 1
        rejected.append(first is not None)
    import numpy as np

    rej = np.array(rejected, dtype=bool)
    for r in rows.values():
        n = r["alone_good"] + r["alone_bad"]
        r["precision_bad"] = round(r["alone_bad"] / n, 3) if n else None
    m = metrics(labels == 0, rej)
    notes = []
    for s in steps:
        model = getattr(s, "model", None)
        meta = getattr(model, "meta", None)
        if isinstance(meta, dict):
            seen = set(meta.get("trained_on") or [])
            if {p.name for p in paths} & seen:
                cv = meta.get("cv") or {}
                fig = cv.get("chain", cv).get("mcc") if isinstance(cv.get("chain", cv), dict) else None
                notes.append(f"step {s.name!r} was trained on these paragraphs: its figures here are in-sample"
                             + (f"; cross-validated MCC {fig}" if fig is not None else ""))
    return {"chain": chain.name, "paragraphs": int(labels.size), "bad": int((labels == 0).sum()),
            "rejected": int(rej.sum()), "rejected_bad": int((rej & (labels == 0)).sum()),
            "mcc": round(m["mcc"], 4), "recall_bad": round(m["recall_bad"], 4),
            "precision_bad": round(m["precision_bad"], 4), "filters": list(rows.values()), "notes": notes}


def format_table(t: dict[str, Any]) -> str:
    """The table as text (one line per filter)."""
    base = t["bad"] / max(1, t["paragraphs"])
    out = [f"chain {t['chain']} on {t['paragraphs']} labelled paragraphs ({t['bad']} bad, base rate {base:.2f}): "
           f"rejects {t['rejected']} ({t['rejected_bad']} bad); MCC {t['mcc']:.3f}, recall(bad) {t['recall_bad']:.2f}, "
           f"precision(bad) {t['precision_bad']:.2f}",
           f"{'filter':24s} {'alone: good':>11s} {'bad':>5s} {'prec(bad)':>9s}   {'first: good':>11s} {'bad':>5s}"]
    for r in t["filters"]:
        p = "-" if r["precision_bad"] is None else f"{r['precision_bad']:.2f}"
        out.append(f"{r['step'][:24]:24s} {r['alone_good']:11d} {r['alone_bad']:5d} {p:>9s}   "
                   f"{r['first_good']:11d} {r['first_bad']:5d}")
    out += [f"note: {n}" for n in t.get("notes", [])]
    return "\n".join(out)
