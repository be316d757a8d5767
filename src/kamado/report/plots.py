"""Figures: matplotlib rendered to inline base64 PNG (Agg backend; no files, no display), and the same panels as
JSON specs for the report's interactive charts (:func:`panels_fig`)."""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


@dataclass
class Series:
    """One line: label, x values, y values; ``points`` draws markers (e.g. sparse validation losses)."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    points: bool = False
    dashed: bool = False
    color: str | None = None


@dataclass
class Panel:
    """One subplot."""

    title: str
    series: list[Series]
    xlabel: str = "step"
    ylabel: str = ""
    logy: bool = False
    ylim: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # run events: {"step", "kind", "detail"} (events.jsonl), optionally "run" (a label) and "color" (its series');
    # a guard rollback's detail.from_step..step (the steps done again) is shaded
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Figure:
    """Panels as one PNG (base64, for printing) and one interactive chart spec per panel."""

    png: str | None
    charts: list[dict[str, Any]]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def smooth(y: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (NaN-free inputs)."""
    out, acc = [], 0.0
    for i, v in enumerate(y):
        acc += v
        if i >= window:
            acc -= y[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _clean(s: Series) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for x, y in zip(s.x, s.y, strict=False):
        if isinstance(y, int | float) and isinstance(x, int | float) and math.isfinite(y):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def panels_png(panels: Sequence[Panel], width: float = 5.2, height: float = 3.2, smooth_over: int = 60) -> str | None:
    """Panels side by side as one PNG (base64); None when no panel has data.

    Dense line series (more than ``smooth_over`` points) are drawn faint with a moving average on top.
    """
    panels = [p for p in panels if any(_clean(s)[0] for s in p.series)]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), squeeze=False)
    for ax, p in zip(axes[0], panels, strict=True):
        for i, s in enumerate(p.series):
            xs, ys = _clean(s)
            if not xs:
                continue
            color = s.color or PALETTE[i % len(PALETTE)]
            ls = "--" if s.dashed else "-"
            if s.points:
                ax.plot(xs, ys, marker="o", ms=4, ls=ls, lw=1.2, color=color, label=s.label)
            elif len(xs) > smooth_over:
                w = max(2, len(xs) // 40)
                ax.plot(xs, ys, lw=0.6, alpha=0.3, color=color)
                ax.plot(xs, smooth(ys, w), lw=1.5, ls=ls, color=color, label=f"{s.label} (avg {w})")
            else:
                ax.plot(xs, ys, lw=1.5, ls=ls, color=color, label=s.label)
        for e in (_event(x) for x in p.events):
            if e is not None:
                ax.axvline(e["x"], color=e.get("color", "#c00"), lw=0.8, ls=":", alpha=0.8)
                if "span" in e:
                    ax.axvspan(*e["span"], color=e.get("color", "#c00"), alpha=0.1, lw=0)
        if p.logy:
            ax.set_yscale("log")
        if p.ylim:
            ax.set_ylim(*p.ylim)
        if p.xlabel == "step":
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(p.title, fontsize=10)
        ax.set_xlabel(p.xlabel, fontsize=9)
        ax.set_ylabel(p.ylabel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if any(s.label for s in p.series):
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, plt)


def bars_png(categories: Sequence[str], groups: dict[str, Sequence[float]], title: str, ylabel: str = "",
             width: float = 6.4, height: float = 3.2, logy: bool = False) -> str | None:
    """Grouped bars: one group per category, one bar per entry of ``groups``; None without data."""
    if not categories or not groups:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(width, height))
    n = len(groups)
    w = 0.8 / n
    for i, (name, vals) in enumerate(groups.items()):
        xs = [j + (i - (n - 1) / 2) * w for j in range(len(categories))]
        ys = [v if isinstance(v, int | float) and math.isfinite(v) else 0.0 for v in vals]
        ax.bar(xs, ys, width=w, label=name, color=PALETTE[i % len(PALETTE)])
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, fontsize=8, rotation=20 if len(categories) > 4 else 0, ha="right"
                       if len(categories) > 4 else "center")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(labelsize=8)
    if n > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig, plt)


def metric_bars_png(metrics: Sequence[tuple[str, str, bool]], models: Sequence[str],
                    values: dict[tuple[str, str], Sequence[float | None]], per_row: int = 4) -> str | None:
    """One small bar chart per (task, metric, lower_is_better), one bar per model; own y-scale each."""
    if not metrics or not models:
        return None
    plt = _pyplot()
    rows = math.ceil(len(metrics) / per_row)
    cols = min(per_row, len(metrics))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for k, (task, met, lower) in enumerate(metrics):
        ax = axes[k // cols][k % cols]
        vals = values.get((task, met)) or []
        for i, (name, v) in enumerate(zip(models, vals, strict=False)):
            if isinstance(v, int | float) and math.isfinite(v):
                ax.bar(i, v, color=PALETTE[i % len(PALETTE)], label=name)
                ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels(models, fontsize=7, rotation=20, ha="right")
        ax.set_title(f"{task}: {met} ({'lower' if lower else 'higher'} is better)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)
    for k in range(len(metrics), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    return _png(fig, plt)


def _thin(xs: list[float], ys: list[float], most: int) -> tuple[list[float], list[float]]:
    """At most about ``most`` points: every k-th point, plus each stride's extreme values (spikes stay visible)."""
    if len(xs) <= most:
        return xs, ys
    k = math.ceil(len(xs) / (most / 3))
    keep: set[int] = {0, len(xs) - 1}
    for a in range(0, len(xs), k):
        idx = range(a, min(a + k, len(xs)))
        keep |= {a, max(idx, key=lambda i: ys[i]), min(idx, key=lambda i: ys[i])}
    order = sorted(keep)
    return [xs[i] for i in order], [ys[i] for i in order]


def _event(e: Any) -> dict[str, Any] | None:
    if not isinstance(e, dict):
        return None
    x = e.get("step", e.get("x"))
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
        return None
    detail = e.get("detail", e.get("message", ""))
    if not isinstance(detail, str):
        import json

        detail = json.dumps(detail, ensure_ascii=False, default=str)
    out: dict[str, Any] = {"x": float(x), "kind": str(e.get("kind") or e.get("event") or "event")[:60],
                           "detail": detail[:300]}
    d = e.get("detail")
    start = d.get("from_step") if isinstance(d, dict) and out["kind"] == "rollback" else None
    if isinstance(start, int | float) and not isinstance(start, bool) and math.isfinite(start) and start < x:
        out["span"] = [float(start), float(x)]  # the steps done again after a rollback
    if isinstance(e.get("run"), str):
        out["run"] = e["run"][:80]
    if isinstance(e.get("color"), str) and re.fullmatch(r"#[0-9a-fA-F]{3,8}", e["color"]):
        out["color"] = e["color"]
    return out


def chart_spec(p: Panel, smooth_over: int = 60, most: int = 3000) -> dict[str, Any]:
    """The JSON spec of one interactive chart (the panel's data, colours as in the PNG)."""
    series = []
    for i, s in enumerate(p.series):
        xs, ys = _clean(s)
        if not xs:
            continue
        if not s.points:
            order = sorted(range(len(xs)), key=xs.__getitem__)
            xs, ys = [xs[j] for j in order], [ys[j] for j in order]
            xs, ys = _thin(xs, ys, most)
        series.append({"label": s.label, "x": xs, "y": [float(f"{v:.6g}") for v in ys], "points": s.points,
                       "dashed": s.dashed, "color": s.color or PALETTE[i % len(PALETTE)]})
    events = [e for e in (_event(x) for x in p.events) if e is not None]
    return {"title": p.title, "xlabel": p.xlabel, "ylabel": p.ylabel, "logy": p.logy,
            "ylim": list(p.ylim) if p.ylim else None, "smooth_over": smooth_over, "series": series,
            "events": events}


def panels_fig(panels: Sequence[Panel], width: float = 5.2, height: float = 3.2, smooth_over: int = 60) -> Figure | None:
    """:func:`panels_png` and the interactive chart specs of the same panels; None when no panel has data."""
    png = panels_png(panels, width, height, smooth_over)
    if png is None:
        return None
    keep = [p for p in panels if any(_clean(s)[0] for s in p.series)]
    return Figure(png, [chart_spec(p, smooth_over) for p in keep])


def _png(fig: Any, plt: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")
