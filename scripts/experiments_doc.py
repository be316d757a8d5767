"""Regenerate the tables of docs/experiments.md from the committed docs/experiments/<name>.json.

Every block between ``<!-- BEGIN experiment NAME -->`` and ``<!-- END experiment NAME -->`` is replaced by
tables made from ``docs/experiments/NAME.json`` (what ``kamado run`` wrote as ``OUT/experiment.json``): per
variant the mean ± sample standard deviation over seeds of the chosen metrics (bits-per-character columns with
their unigram floor), the learning-rate selection where the experiment has one, every comparison with its 95%
interval and the word it earns (resolved / not resolved at this budget), and the wall time. The prose around
the blocks is written by hand and must agree with them.

    python scripts/experiments_doc.py            # rewrite docs/experiments.md in place
    python scripts/experiments_doc.py --check    # exit 1 if it is not up to date
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "experiments.md"
BLOCK = re.compile(r"(<!-- BEGIN experiment (?P<name>[\w.-]+) -->\n).*?(<!-- END experiment (?P=name) -->)", re.S)

# the columns shown per experiment (metric names after the experiment's rename); the others stay in the JSON
COLUMNS: dict[str, list[str]] = {
    "scaling-lr": ["pretrain.params", "pretrain.perplexity.bpc@ja_wiki", "pretrain.perplexity.bpc@en_wiki"],
    "scaling": ["pretrain.params", "pretrain.tokens", "pretrain.perplexity.bpc@ja_wiki",
                "pretrain.perplexity.bpc@en_wiki", "pretrain.val_loss"],
    "mixture": ["pretrain.perplexity.bpc@ja_wiki", "pretrain.perplexity.bpc@ja_lit",
                "pretrain.perplexity.bpc@en_wiki", "pretrain.perplexity.bpc@en_lit"],
    "cleaning": ["pretrain.tokens", "pretrain.perplexity.bpc@ja_wiki", "pretrain.perplexity.bpc@ja_lit"],
    "full-vs-lora": ["tune.val_loss_before", "tune.val_loss_after", "tuned.dolly-ja-select.answer_loss",
                     "tuned.dolly-ja-report.answer_loss", "tuned.perplexity.bpc_ja", "tuned.perplexity.bpc_en"],
    "continue-ja": ["tokenizer.chars_per_token_ja", "pretrain.perplexity.bpc_ja", "pretrain.perplexity.bpc_en",
                    "pretrain.tokens_per_s"],
}


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.{digits}f}"


def _cell(xs: list[float]) -> str:
    """Mean ± sample std over seeds (the mean alone when every seed gives the same value)."""
    if not xs:
        return "—"
    mean = statistics.fmean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return _fmt(mean) if sd < 5e-4 * max(1.0, abs(mean)) else f"{_fmt(mean)} ± {_fmt(sd)}"


def runs_table(e: dict[str, Any], columns: list[str]) -> str:
    """Variants as rows: mean ± std over seeds per column; a bpc column gets its unigram floor beside it."""
    by: dict[str, list[dict[str, float]]] = {}
    for r in e["runs"]:
        by.setdefault(r["variant"], []).append(r["metrics"])
    head, cols = ["variant", "seeds"], []
    for c in columns:
        head.append(c.removeprefix("pretrain.").replace("perplexity.", ""))
        cols.append((c, False))
        if "bpc" in c.rsplit(".", 1)[-1] and "unigram" not in c:
            floor = c[: c.rindex(".") + 1] + "unigram_" + c.rsplit(".", 1)[-1]
            if any(floor in m for ms in by.values() for m in ms):
                head.append("unigram floor")
                cols.append((floor, True))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, ms in by.items():
        cells = [v, str(len(ms))]
        for c, _ in cols:
            cells.append(_cell([m[c] for m in ms if c in m]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_table(sel: dict[str, Any] | None) -> str:
    if not sel:
        return ""
    word = "highest" if sel.get("maximize") else "lowest"
    lines = [f"Chosen per method: the {word} mean `{sel['by']}` over seeds.", "",
             "| method | chosen | candidates (mean over seeds) |", "|---|---|---|"]
    for g, s in sel["groups"].items():
        lines.append(f"| {g} | {s['chosen'] or '—'} | " + ", ".join(f"{v} {x:.4f}" for v, x in s["scores"].items())
                     + " |")
    return "\n".join(lines)


def comparisons_table(comps: list[dict[str, Any]]) -> str:
    lines = ["| baseline | variant | metric | variant − baseline | 95% interval | interval over | resolved? |",
             "|---|---|---|---|---|---|---|"]
    for c in comps:
        word = "**resolved**" if c["resolved"] else "not resolved at this budget"
        base = c["baseline"] + (f" ({c['groups'][0]})" if c.get("groups") else "")
        var = c["variant"] + (f" ({c['groups'][1]})" if c.get("groups") else "")
        over = c.get("interval", "t over seeds").replace("bootstrap over ", "")
        lines.append(f"| {base} | {var} | {c['metric']} | {c['mean']:+.4f} | [{c['ci95'][0]:+.4f}, "
                     f"{c['ci95'][1]:+.4f}] | {over} ({len(c['seeds'])} seeds) | {word} |")
    return "\n".join(lines)


def block(name: str) -> str:
    """The generated Markdown of one experiment."""
    path = ROOT / "docs" / "experiments" / f"{name}.json"
    e = json.loads(path.read_text(encoding="utf-8"))
    res = sum(c["resolved"] for c in e["comparisons"])
    parts = [f"*Generated from `docs/experiments/{name}.json` by `scripts/experiments_doc.py`.* Wall time "
             f"{e['wall_s']:,.0f} s ({e['wall_s'] / 60:.0f} min; stage time from the manifests), seeds "
             f"{', '.join(map(str, e['seeds']))}; {res} of {len(e['comparisons'])} comparisons resolved.", "",
             runs_table(e, COLUMNS.get(name, [])), ""]
    if e.get("selection"):
        parts += [selection_table(e["selection"]), ""]
    parts += [comparisons_table(e["comparisons"]), ""]
    return "\n".join(parts)


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + block(m.group("name")) + m.group(3), text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/experiments.md is not up to date")
    args = ap.parse_args()
    old = DOC.read_text(encoding="utf-8")
    new = render(old)
    if args.check:
        if new != old:
            print(f"{DOC}: tables differ from docs/experiments/*.json (run scripts/experiments_doc.py)")
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)} ({len(BLOCK.findall(old))} experiment blocks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
