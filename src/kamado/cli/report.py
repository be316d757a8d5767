"""``kamado report``: a self-contained HTML report of one run, or of several runs compared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folder(s); with two or more, the first is reported "
                                               "and the others are compared with it.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write "
                                             "(default: RUN/report.html, or RUN/compare.html for several runs).")] = None,
    title: Annotated[str | None, typer.Option("--title", help="Report title.")] = None,
) -> None:
    """Write a self-contained HTML report (inline plots) from the files of a run folder.

    Every number comes from the run's artifacts: manifests, corpus stats, pack token counts, pretraining metrics (loss, val loss, tokens/s, MFU), tuning curves (full vs LoRA) and eval results.

    Examples:
      kamado report runs/tiny
      kamado report runs/tiny runs/tiny-wsd --out compare.html
    """
    from kamado.config import KamadoError
    from kamado.report.stage import build_report
    from kamado.ui import console, table

    for r in runs:
        if not r.is_dir():
            raise KamadoError(f"{r}: no such run folder")
    doc, counts = build_report(list(runs), title)
    dest = out or runs[0] / ("report.html" if len(runs) == 1 else "compare.html")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(doc, encoding="utf-8")
    console.print(table("kamado report", ["file", "sections", "missing", "plots", "size"],
                        [[str(dest), counts["sections"], counts["missing"] or "—", counts["plots"],
                          f"{counts['bytes'] / 1024:.0f} KiB"]]))
