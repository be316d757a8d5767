"""``kamado corpus inspect``: kept and rejected documents side by side, sampled per rejection reason."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.jsonl import read_jsonl


def _iter(folder: Path) -> Any:
    """The records of an output folder's shards, in any format ShardWriter writes (.jsonl.gz/.zst, Parquet)."""
    from kamado.corpus.io.readers import iter_records, shard_files

    for p in shard_files(folder):
        yield from iter_records(p)


def sample(folder: Path, per_reason: int = 2, only: str | None = None, seed: int = 0,
           kept_n: int | None = None) -> tuple[list[dict], dict[str, list[dict]], dict[str, int]]:
    """Reservoir samples: kept documents, and rejected ones per reason code (deterministic for a seed)."""
    folder = Path(folder)
    if not (folder / "stats.json").is_file():
        raise KamadoError(f"{folder}: not an output folder of `kamado corpus clean` (no stats.json)")
    rng = random.Random(seed)
    by: dict[str, list[dict]] = {}
    seen: dict[str, int] = {}
    for rec in _iter(folder / "rejected"):
        code = f"{rec.get('rejected_by')}: {str(rec.get('reason', '')).split(':', 1)[0]}"
        if only and only not in code:
            continue
        n = seen[code] = seen.get(code, 0) + 1
        bucket = by.setdefault(code, [])
        if len(bucket) < per_reason:
            bucket.append(rec)
        else:
            j = rng.randrange(n)
            if j < per_reason:
                bucket[j] = rec
    want = kept_n if kept_n is not None else max(per_reason * max(len(by), 1), per_reason)
    kept: list[dict] = []
    k = 0
    for rec in _iter(folder / "kept"):
        k += 1
        if len(kept) < want:
            kept.append(rec)
        else:
            j = rng.randrange(k)
            if j < want:
                kept[j] = rec
    return kept, by, seen


def _short(text: str, chars: int) -> str:
    t = text.replace("\n", " ⏎ ")
    return t if len(t) <= chars else t[:chars] + f" … (+{len(t) - chars:,} chars)"


def _measures(rec: dict, step: str | None) -> str:
    m = (rec.get("meta") or {}).get("measures") or {}
    if step and step in m:
        return ", ".join(f"{k}={v}" for k, v in m[step].items())
    return ""


def show(folder: Path, per_reason: int = 2, only: str | None = None, chars: int = 240, seed: int = 0) -> None:
    """Print the side-by-side view with rich."""
    from rich.markup import escape as esc
    from rich.table import Table

    from kamado.ui import console

    folder = Path(folder)
    stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    kept, by, seen = sample(folder, per_reason, only, seed)
    console.print(f"[bold]{esc(str(folder))}[/]: input {stats['input']:,} = kept {stats['kept']:,} + rejected "
                  f"{stats['rejected']:,} + errors {stats['errors']:,}")
    ki = 0
    for code in sorted(by, key=lambda c: -seen[c]):
        t = Table(title=f"{esc(code)}  ({seen[code]:,} rejected)", title_justify="left", show_lines=True,
                  expand=True)
        t.add_column("kept (random sample)", ratio=1)
        t.add_column(f"rejected by {esc(code)}", ratio=1)
        for rec in by[code]:
            left = ""
            if kept:
                kr = kept[ki % len(kept)]
                ki += 1
                left = f"[dim]{esc(str(kr.get('id')))}[/]\n{esc(_short(kr.get('text', ''), chars))}"
            right = (f"[dim]{esc(str(rec.get('id')))}[/]  [yellow]{esc(str(rec.get('reason')))}[/]\n"
                     f"{esc(_short(rec.get('text', ''), chars))}")
            ms = _measures(rec, rec.get("rejected_by"))
            if ms:
                right += f"\n[dim]{esc(ms)}[/]"
            t.add_row(left, right)
        console.print(t)
    if not by:
        console.print("no rejected documents" + (f" matching {only!r}" if only else ""))
    errs = folder / "errors.jsonl"
    if errs.is_file() and errs.stat().st_size:
        lines = read_jsonl(errs)
        console.print(f"[bold]errors.jsonl[/]: {len(lines):,} unreadable lines, e.g.")
        for e in lines[:3]:
            console.print(f"  {e['file']}:{e['line']}: {e['error']}", markup=False)
