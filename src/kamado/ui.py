"""Console output shared by every command: a rich console, progress bars and summary tables."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True, highlight=False)


def quiet() -> bool:
    """True when progress bars should be hidden (``KAMADO_QUIET=1``)."""
    return os.environ.get("KAMADO_QUIET", "") not in ("", "0")


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "") -> Iterator[Any]:
    """A progress bar; yields ``advance(n=1, **fields)``. Hidden when quiet (``KAMADO_QUIET=1``)."""
    if quiet():
        yield lambda n=1, **kw: None
        return
    cols = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*cols, console=console, transient=False) as p:
        task = p.add_task(description, total=total, info="")

        def advance(n: float = 1, **fields: Any) -> None:
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            p.update(task, advance=n, info=info)

        yield advance


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table for end-of-command summaries."""
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[f"{x:,.4g}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else str(x) for x in r])
    return t
