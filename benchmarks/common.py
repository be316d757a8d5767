"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

from typing import Any


def print_table(cols: list[str], rows: list[list[Any]]) -> None:
    """Print a plain-text table (column widths fitted), preceded by a blank line."""
    widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
    print()
    print("  ".join(str(c).ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
