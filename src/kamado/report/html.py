"""Small HTML building blocks for a self-contained report (inline CSS, inline PNG; no scripts, no links out)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CSS = """
body{font-family:-apple-system,"Segoe UI","Hiragino Sans","Noto Sans JP",sans-serif;margin:0;color:#222;
background:#fafafa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:1.2rem 1.6rem 3rem}
h1{font-size:1.6rem;margin:.2rem 0 .3rem}h2{font-size:1.2rem;border-bottom:2px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}h3{font-size:1rem;margin:1.2rem 0 .4rem}
.sub{color:#666;font-size:.9rem}
nav{font-size:.85rem;margin:.6rem 0 1rem}nav a{margin-right:.9rem;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;margin:.4rem 0 .8rem;font-size:.85rem;background:#fff}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:right;vertical-align:top}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
td.t{text-align:left;font-family:ui-monospace,Menlo,monospace;font-size:.8rem}
.note{color:#8a5a00;background:#fff6e0;border-left:3px solid #e0a800;padding:.3rem .6rem;font-size:.85rem;margin:.5rem 0}
.best{font-weight:bold}
img{max-width:100%;display:block;margin:.3rem 0 .8rem;background:#fff;border:1px solid #eee}
details{margin:.4rem 0}summary{cursor:pointer;color:#1f5fa8;font-size:.9rem}
pre{background:#fff;border:1px solid #ddd;padding:.6rem;font-size:.75rem;overflow:auto;max-height:28rem}
.grid{display:flex;flex-wrap:wrap;gap:1rem}.grid>div{flex:1 1 360px}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(x: Any) -> str:
    """Numbers for humans: thousands separators for integers, 4 significant digits for floats."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
            return f"{x:.3g}"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.4g}"
    if isinstance(x, dict | list):
        return json.dumps(x, ensure_ascii=False)[:200]
    return str(x)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], text_cols: Sequence[int] = (),
          bold: set[tuple[int, int]] | None = None) -> str:
    """An HTML table; cells are formatted with :func:`fmt` and escaped; ``bold`` marks (row, col) cells."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        cells = []
        for j, v in enumerate(r):
            cls = []
            if j in text_cols:
                cls.append("t")
            if bold and (i, j) in bold:
                cls.append("best")
            c = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{c}>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(d: dict[str, Any]) -> str:
    """Two-column table of scalar entries (nested values are shown as compact JSON)."""
    return table(["key", "value"], [[k, v] for k, v in d.items()])


def img(b64: str | None, alt: str) -> str:
    """An inline PNG (or nothing when the figure had no data)."""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{b64}">' if b64 else ""


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{body}</details>"


def pre(obj: Any) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, indent=2, default=str)
    return f"<pre>{esc(text)}</pre>"


@dataclass
class Section:
    """One titled part of the report; ``anchor`` is its id for the table of contents."""

    anchor: str
    title: str
    body: str


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document: header, table of contents, sections."""
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    parts = [f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections]
    return ("<!DOCTYPE html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><main><h1>{esc(title)}</h1><div class=\"sub\">{subtitle}</div>"
            f"<nav>{nav}</nav>{''.join(parts)}</main></body></html>\n")
