"""Console output shared by every command: a rich console, progress bars and summary tables."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
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


DEFAULT_EVERY_S = 15.0


def progress_mode() -> str:
    """``bar``, ``plain`` or ``off``: ``KAMADO_PROGRESS`` (``auto`` by default: bars on a terminal or in a
    notebook, plain text lines when the output goes to a file or a pipe)."""
    if quiet():
        return "off"
    mode = os.environ.get("KAMADO_PROGRESS", "auto").strip().lower() or "auto"
    if mode in ("bar", "bars", "rich"):
        return "bar"
    if mode in ("plain", "text", "log", "lines"):
        return "plain"
    if mode in ("off", "none", "0"):
        return "off"
    return "bar" if console.is_terminal or console.is_jupyter else "plain"


def progress_every() -> float:
    """Seconds between two plain progress lines (``KAMADO_PROGRESS_EVERY``, default 15)."""
    try:
        v = float(os.environ.get("KAMADO_PROGRESS_EVERY", "") or DEFAULT_EVERY_S)
    except ValueError:
        return DEFAULT_EVERY_S
    return v if v > 0 else DEFAULT_EVERY_S


def _dur(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _num(x: float) -> str:
    if x >= 100 or float(x).is_integer():
        return f"{x:,.0f}"
    return f"{x:,.3g}" if x < 10 else f"{x:,.1f}"


class _State:
    """What a progress display knows: counts, the latest text fields and the running sums of number fields.

    ``advance(n, **fields)``: string fields are shown as given (latest value: ``loss="2.31"``); number fields are
    increments that are summed and shown with their rate (``docs=120`` → ``docs=1,200 (340/s)``; ``bytes`` is
    shown in MB and MB/s).
    """

    def __init__(self, description: str, total: float | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.n = 0.0
        self.text: dict[str, str] = {}
        self.sums: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.t_first: float | None = None  # rates leave out the first update (warm-up, or a resume jump)
        self.n_first = 0.0
        self.lock = threading.Lock()

    def update(self, n: float, fields: dict[str, Any]) -> None:
        with self.lock:
            self.n += n
            for k, v in fields.items():
                if v is None:
                    continue
                if isinstance(v, int | float) and not isinstance(v, bool):
                    self.sums[k] = self.sums.get(k, 0.0) + float(v)
                else:
                    self.text[k] = str(v)
            if self.t_first is None:
                self.t_first, self.n_first = time.monotonic(), self.n

    def rate(self, now: float) -> float | None:
        if self.t_first is None or self.n <= self.n_first or now <= self.t_first:
            return None
        return (self.n - self.n_first) / (now - self.t_first)

    def fields(self, now: float) -> str:
        """Text fields, then summed fields with rates: ``loss=2.31 tok_s=5,012 docs=1,200 (340/s)``."""
        el = max(now - self.t0, 1e-9)
        parts = [f"{k}={v}" for k, v in self.text.items()]
        for k, v in self.sums.items():
            if k in ("bytes", "nbytes"):
                parts.append(f"{v / 1e6:,.1f} MB ({v / 1e6 / el:,.2f} MB/s)")
            else:
                parts.append(f"{k}={_num(v)} ({_num(v / el)}/s)")
        return " ".join(parts)

    def line(self, now: float, final: bool = False) -> str:
        """One plain progress line, e.g.
        ``[12:03:04] pretrain: step 120/1000 (12%) loss=3.210 tok_s=5,012 | 2.05 step/s | 1:02 elapsed, ETA 7:09``.
        """
        with self.lock:
            unit = self.unit or "step"
            count = f"{_num(self.n)}/{_num(self.total)} ({100 * self.n / self.total:.0f}%)" if self.total else _num(self.n)
            out = [f"[{time.strftime('%H:%M:%S')}] {self.description}: {unit} {count}"]
            extra = self.fields(now)
            if extra:
                out.append(" " + extra)
            r = self.rate(now)
            tail = []
            if r:
                one = unit[:-1] if unit.endswith("s") and len(unit) > 1 else unit
                tail.append(f"{r:,.3g} {unit}/s" if r >= 1 else f"{1 / r:,.3g} s/{one}")
            tail.append(f"{_dur(now - self.t0)} elapsed")
            if final:
                tail.append("done")
            elif self.total and r:
                tail.append(f"ETA {_dur(max(self.total - self.n, 0) / r)}")
            return "".join(out) + " | " + ", ".join(tail)


def _emit(text: str) -> None:
    f = console.file
    try:
        f.write(text + "\n")
        f.flush()
    except (OSError, ValueError):  # a closed pipe must never stop the work
        pass


@contextmanager
def _plain(state: _State, every: float) -> Iterator[Callable[..., None]]:
    """Plain text lines: one at the start, one every ``every`` seconds (from a timer thread, so a slow step
    still shows the clock moving) and one at the end."""
    stop = threading.Event()
    _emit(f"[{time.strftime('%H:%M:%S')}] {state.description}: started"
          + (f", {_num(state.total)} {state.unit or 'steps'}" if state.total else "")
          + f" (progress every {every:g} s; KAMADO_PROGRESS_EVERY)")

    def tick() -> None:
        while not stop.wait(every):
            _emit(state.line(time.monotonic()))

    th = threading.Thread(target=tick, name=f"progress:{state.description}", daemon=True)
    th.start()
    ok = False
    try:
        yield lambda n=1, **fields: state.update(n, fields)
        ok = True
    finally:
        stop.set()
        th.join(timeout=2)
        line = state.line(time.monotonic(), final=ok)
        _emit(line if ok else line + " (stopped)")


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "") -> Iterator[Any]:
    """A progress display; yields ``advance(n=1, **fields)``.

    On a terminal a rich bar; when the output goes to a file or pipe (CI, Slurm, ``nohup``) one plain line per
    ``KAMADO_PROGRESS_EVERY`` seconds (default 15) with the count, the fields, the rate and the ETA. String
    fields are shown as given (``loss="2.31"``); number fields are summed and shown with a rate (``docs=120``,
    ``bytes=...`` in MB/s). ``KAMADO_PROGRESS=bar|plain|off`` forces a mode; ``KAMADO_QUIET=1`` hides all.
    """
    mode = progress_mode()
    if mode == "off":
        yield lambda n=1, **kw: None
        return
    state = _State(description, total, unit)
    if mode == "plain":
        with _plain(state, progress_every()) as advance:
            yield advance
        return
    cols = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*cols, console=console, transient=False) as p:
        task = p.add_task(description, total=total, info="")

        def advance(n: float = 1, **fields: Any) -> None:
            state.update(n, fields)
            p.update(task, advance=n, info=state.fields(time.monotonic()))

        yield advance


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table for end-of-command summaries. Title, headers and cells are plain text, never rich markup
    (a model name, a metric or a judge's "[[rating]]" is shown as it is)."""
    from rich.text import Text

    t = Table(title=Text(title), title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(Text(c), justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[Text(f"{x:,.4g}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else str(x))
                    for x in r])
    return t
