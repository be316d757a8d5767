"""The report stage: one self-contained ``report.html`` built only from the files of a run folder.

Every number shown is read from a stage's artifacts through that stage's reader (``kamado.<stage>.artifacts``,
named by the stage registry: :meth:`Run.artifact`) and from the manifests; a section whose inputs are
missing is replaced by a note. :func:`build_report` also compares runs (loss curves and results side by side).
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.jsonl import read_records
from kamado.manifest import write_text_atomic
from kamado.report import html as H
from kamado.report.artifacts import ReportCounts
from kamado.report.config import ReportConfig
from kamado.report.plots import PALETTE, Panel, Series, bars_png, metric_bars_png, panels_fig
from kamado.stage import STAGE_NAMES, StageContext, stage_spec

STAGES = tuple(s for s in STAGE_NAMES if s != "report")  # the stages a report reads
LOWER_IS_BETTER = ("ppl", "perplexity", "loss", "bpb", "bits", "bpc", "nll", "ece", "stderr")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


@dataclass
class Run:
    """What the report knows about one run folder."""

    dir: Path
    name: str
    recipe: dict[str, Any] | None
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> manifest.json (any status)

    def stage(self, name: str) -> Path | None:
        """The stage folder when it exists."""
        p = self.dir / name
        return p if p.is_dir() else None

    def artifact(self, name: str) -> Any:
        """The stage's folder through its artifact reader (a KamadoError naming the folder if unreadable)."""
        return stage_spec(name).artifact_class().open(self.dir / name)

    def artifact_or_none(self, name: str) -> Any:
        try:
            return self.artifact(name)
        except KamadoError:
            return None


def load_run(run_dir: Path) -> Run:
    """Read a run folder's recipe and stage manifests."""
    recipe = _json(run_dir / "recipe.json")
    name = (recipe or {}).get("name") or run_dir.name
    run = Run(run_dir, str(name), recipe if isinstance(recipe, dict) else None)
    for s in STAGES:
        man = _json(run_dir / s / "manifest.json")
        if isinstance(man, dict):
            run.manifests[s] = man
    return run


def _scalars(d: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (d or {}).items() if isinstance(v, int | float | str | bool) or v is None}


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _median(xs: list[Any]) -> float | None:
    ys = [float(x) for x in xs if _num(x) is not None]
    return statistics.median(ys) if ys else None


# ---------------------------------------------------------------- sections

def overview(run: Run) -> str:
    rows, total = [], 0.0
    for s in STAGES:
        m = run.manifests.get(s)
        if m is None:
            status = "partial (no manifest)" if run.stage(s) else "not in this run"
            rows.append([s, status, None, None, None, ""])
            continue
        wall = _num((m.get("timings") or {}).get("wall_s"))
        total += wall or 0.0
        head = ", ".join(f"{k}={H.fmt(v)}" for k, v in list(_scalars(m.get("counts")).items())[:4])
        rows.append([s, m.get("status", "?"), wall, m.get("finished_at"), m.get("git_commit"), head])
    body = H.table(["stage", "status", "wall s", "finished", "git commit", "headline counts"], rows,
                   text_cols=(3, 4, 5))
    body += H.para(f"Total wall time of the stages: {H.fmt(total)} s ({total / 60:.1f} min).")
    if run.recipe:
        body += H.details("recipe (as run)", H.pre(run.recipe))
    return body


def manifests_section(run: Run) -> str:
    if not run.manifests:
        return H.note("no stage manifests in this run folder")
    body = ""
    versions = {s: m.get("versions") or {} for s, m in run.manifests.items()}
    libs = sorted({k for v in versions.values() for k in v})
    body += "<h3>Library versions per stage</h3>" + H.table(
        ["stage", *libs], [[s, *[v.get(lib) for lib in libs]] for s, v in versions.items()],
        text_cols=tuple(range(1, len(libs) + 1)))
    for s, m in run.manifests.items():
        info = {"stage": s, "status": m.get("status"), "wall_s": (m.get("timings") or {}).get("wall_s"),
                "finished_at": m.get("finished_at"), "git_commit": m.get("git_commit"), "host": m.get("host"),
                "fingerprint": str(m.get("fingerprint"))[:16], "outputs_digest": str(m.get("outputs_digest"))[:16],
                "output files": len(m.get("outputs") or {}), "inputs": len(m.get("inputs") or {})}
        counts = m.get("counts") or {}
        inner = H.kv_table(info) + "<h3>counts</h3>" + H.kv_table(counts)
        inner += H.details("config", H.pre(m.get("config")))
        body += H.details(f"{s}: manifest", inner)
    return body


def corpus_section(run: Run) -> str:
    if run.stage("corpus") is None:
        return H.note("no corpus stage in this run")
    try:
        art = run.artifact("corpus")
    except KamadoError as e:
        return H.note(str(e))
    d = art.path
    body = ""
    if art.sources:
        body += "<h3>Sources</h3>" + H.table(["source", "lang", "kept shards"],
                                             [[s.name, s.lang, s.kept] for s in art.sources])
    stats_files = art.stats_files()
    rows, reasons, names, kept, rej, err = [], [], [], [], [], []
    for p in stats_files:
        st = _json(p)
        if not isinstance(st, dict):
            continue
        where = str(p.parent.relative_to(d)) if p.parent != d else "all"
        for name, rec in _per_source(st, where):
            i, k, r, e = (rec.get(x) for x in ("input", "kept", "rejected", "errors"))
            ok = None
            if all(_num(x) is not None for x in (i, k, r, e)):
                ok = "✓" if i == k + r + e else "✗"
            rows.append([name, i, k, r, e, ok])
            names.append(name)
            kept.append(_num(k) or 0)
            rej.append(_num(r) or 0)
            err.append(_num(e) or 0)
            reasons += [[name, *x] for x in _reasons(rec)]
    if rows:
        body += "<h3>Document accounting (input = kept + rejected + errors)</h3>"
        body += H.table(["source", "input", "kept", "rejected", "errors", "balanced"], rows)
        body += H.img(bars_png(names, {"kept": kept, "rejected": rej, "errors": err}, "documents per source",
                               "documents"), "corpus accounting")
    else:
        body += H.note("no stats.json with document accounting found under corpus/")
    if reasons:
        body += "<h3>Steps: rejections and reasons</h3>" + H.table(
            ["source", "step", "docs in", "rejected", "share", "chars removed", "top reasons"], reasons,
            text_cols=(1, 6))
    counts = _scalars((run.manifests.get("corpus") or {}).get("counts"))
    if counts:
        body += H.details("corpus manifest counts", H.kv_table(counts))
    return body


def _per_source(st: dict[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, record) pairs from a stats.json: top level totals and/or a ``sources`` mapping."""
    out = []
    srcs = st.get("sources")
    if isinstance(srcs, dict):
        out += [(f"{n}", v) for n, v in srcs.items() if isinstance(v, dict)]
    elif isinstance(srcs, list):
        out += [(str(v.get("name", i)), v) for i, v in enumerate(srcs) if isinstance(v, dict)]
    if "input" in st or "kept" in st:
        out.insert(0, (where if not out else f"{where} (total)", st))
    return out


def _reasons(rec: dict[str, Any]) -> list[list[Any]]:
    """Rows (step, input, rejected, share, chars removed, top reasons) from a stats.json ``steps`` list,
    or from ``rejected_by``/``reasons`` mappings."""
    rows = []
    steps = rec.get("steps")
    if isinstance(steps, list):
        for s in steps:
            if not isinstance(s, dict) or s.get("name") is None:
                continue
            i = _num(s.get("input", s.get("docs_in")))
            r = _num(s.get("rejected"))
            reasons = s.get("reasons") if isinstance(s.get("reasons"), dict) else {}
            top = sorted(((k, v) for k, v in reasons.items() if _num(v)), key=lambda kv: -kv[1])[:5]
            rows.append([s["name"], s.get("input", s.get("docs_in")), s.get("rejected"),
                         f"{100 * r / i:.2f}%" if i and r is not None else None, s.get("chars_removed"),
                         ", ".join(f"{k}={v:,}" for k, v in top)])
    for key in ("rejected_by", "reasons", "rejections"):
        m = rec.get(key)
        if isinstance(m, dict):
            tot = sum(v for v in m.values() if _num(v) is not None) or 0
            for name, v in m.items():
                n = v if _num(v) is not None else (v.get("rejected") if isinstance(v, dict) else None)
                rows.append([name, None, n, f"{100 * n / tot:.1f}% of rejections" if tot and _num(n) else None,
                             None, ""])
    return rows


def tokenizer_section(run: Run) -> str:
    if run.stage("tokenizer") is None:
        return H.note("no tokenizer stage in this run")
    try:
        art = run.artifact("tokenizer")
    except KamadoError as e:
        return H.note(str(e))
    c = art.counts
    body = ""
    head = {"vocab size": c.vocab_size or None, "model type": c.model_type or None,
            "sample chars": c.sample_chars or None, "sample lines": c.sample_lines or None,
            "training s": c.train_s or None, "read errors": c.read_errors if art.raw_counts else None}
    head = {k: v for k, v in head.items() if v is not None}
    if head:
        body += H.kv_table(head)
    langs = list(dict.fromkeys([*c.chars_per_token, *c.byte_fallback_rate]))
    if langs:
        body += "<h3>Held-out text per language</h3>" + H.table(
            ["lang", "chars/token", "byte fallback rate", "unk rate", "held-out chars"],
            [[lg, c.chars_per_token.get(lg), c.byte_fallback_rate.get(lg), c.unk_rate.get(lg),
              c.heldout_chars.get(lg)] for lg in langs])
    if c.sources:
        rows = [[n, *(_scalars(x).values())] for n, x in c.sources.items() if isinstance(x, dict)]
        if rows:
            cols = list(_scalars(next(x for x in c.sources.values() if isinstance(x, dict))).keys())
            body += "<h3>Training sample per source</h3>" + H.table(["source", *cols], rows)
    cfg = art.hf_config()
    if cfg:
        keep = {k: cfg.get(k) for k in ("tokenizer_class", "bos_token", "eos_token", "unk_token", "pad_token",
                                        "model_max_length") if k in cfg}
        if (_num(keep.get("model_max_length")) or 0) > 1e9:
            keep.pop("model_max_length")
        body += H.details("tokenizer_config.json", H.kv_table(keep))
    return body or H.note("the tokenizer stage left no statistics (manifest counts missing)")


def data_section(run: Run) -> str:
    if run.stage("data") is None:
        return H.note("no data (pack) stage in this run")
    try:
        art = run.artifact("data")
    except KamadoError as e:
        return H.note(f"data/pack.json missing or unreadable: {e}")
    srcs = art.sources
    tot = art.train_tokens or 1
    rows = [[n, s.lang, s.docs, s.train_tokens, s.valid_tokens, f"{100 * s.train_tokens / tot:.1f}%"]
            for n, s in srcs.items()]
    body = H.kv_table({"vocab_size": art.vocab_size, "dtype": art.dtype, "bos_id": art.bos_id, "eos_id": art.eos_id})
    body += H.table(["source", "lang", "docs", "train tokens", "valid tokens", "share of train"], rows)
    body += H.img(bars_png(list(srcs), {"train": [s.train_tokens for s in srcs.values()],
                                        "valid": [s.valid_tokens for s in srcs.values()]},
                           "packed tokens per source", "tokens", logy=True), "tokens per source")
    return body


def _by_step(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step, in step order; the later record of a step wins (after a guard rollback, or a resume,
    the steps since the checkpoint are logged again and the later records are the valid ones)."""
    last: dict[float, dict[str, Any]] = {}
    for r in recs:
        last.pop(r["step"], None)
        last[r["step"]] = r
    return sorted(last.values(), key=lambda r: r["step"])


def _train_records(recs: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    train = [r for r in recs if _num(r.get("loss")) is not None and _num(r.get("step")) is not None]
    val = [r for r in recs if any(k.startswith("val_loss") for k in r) and _num(r.get("step")) is not None]
    return _by_step(train), _by_step(val)


_QUIET_EVENTS = {"finished", "inject"}  # not marked when several runs share a chart


def _run_events(path: Path, run: str, color: str) -> list[dict[str, Any]]:
    """A run's guard events (events.jsonl) for a shared chart: labelled and coloured like the run's curve."""
    out = []
    for e in read_records(path):
        d = e.get("detail")
        if e.get("kind") in _QUIET_EVENTS or (e.get("kind") == "started" and not (isinstance(d, dict) and d.get("resumed"))):
            continue
        out.append(e | {"run": run, "color": color})
    return out


def _val_series(val: list[dict], prefix: str = "") -> list[Series]:
    keys = sorted({k for r in val for k in r if k.startswith("val_loss") and _num(r.get(k)) is not None})
    out = []
    for k in keys:
        pts = [(r["step"], r[k]) for r in val if _num(r.get(k)) is not None]
        out.append(Series(f"{prefix}{k}", [p[0] for p in pts], [p[1] for p in pts], points=True, dashed=True))
    return out


def pretrain_section(run: Run) -> str:
    if run.stage("pretrain") is None:
        return H.note("no pretrain stage in this run")
    try:
        art = run.artifact("pretrain")
    except KamadoError as e:
        return H.note(str(e))
    d = art.path
    recs = art.metrics()
    train, val = _train_records(recs)
    if not train:
        return H.note("pretrain/metrics.jsonl missing or without loss records")
    steps = [r["step"] for r in train]
    tail = [r["loss"] for r in train[-20:]]
    mfu = [r.get("mfu") for r in train[1:]]
    mfu_scale = 100.0 if (_median(mfu) or 0) <= 1.0 else 1.0  # fractions → %
    summary = {"steps logged": len(train), "last step": steps[-1], "first loss": train[0]["loss"],
               "final loss (mean of last 20)": statistics.mean(tail),
               "last val loss": next((r.get("val_loss") for r in reversed(val) if "val_loss" in r), None),
               "median tokens/s": _median([r.get("tokens_per_s") for r in train[1:]]),
               "median TFLOP/s": _median([r.get("tflops") for r in train[1:]]),
               "median MFU %": (_median(mfu) or 0) * mfu_scale if _median(mfu) is not None else None}
    tokens = art.tokens_seen(recs)
    if tokens is not None:
        summary["tokens seen"] = tokens
    body = H.kv_table(summary)
    body += H.figure(panels_fig([
        Panel("training loss", [Series("train loss", steps, [r["loss"] for r in train]), *_val_series(val)],
              ylabel="cross-entropy (nats/token)",  # run events (guard: spikes, rollbacks, ...) are marked
              events=read_records(d / "events.jsonl") + [r for r in recs if "event" in r]),
        Panel("learning rate", [Series("lr", steps, [r.get("lr") for r in train])], ylabel="lr")]),
        "pretraining loss")
    body += H.figure(panels_fig([
        Panel("throughput", [Series("tokens/s", steps[1:], [r.get("tokens_per_s") for r in train[1:]])],
              ylabel="tokens/s"),
        Panel("model FLOPs utilisation", [Series("MFU %", steps[1:], [
            (_num(r.get("mfu")) or float("nan")) * mfu_scale for r in train[1:]])], ylabel="%"),
        Panel("gradient norm", [Series("grad norm", steps, [r.get("grad_norm") for r in train])], logy=True)]),
        "throughput and MFU")
    panels = []
    for prefix, title in (("mix/", "cumulative token share per source"),
                          ("mix_stage/", "token share within the current mixture stage")):
        keys = sorted({k for r in train for k in r if k.startswith(prefix) and _num(r.get(k)) is not None})
        if keys:
            panels.append(Panel(title, [Series(k[len(prefix):], steps, [r.get(k) for r in train]) for k in keys],
                                ylabel="share", ylim=(0.0, 1.0)))
    if panels:
        body += H.figure(panels_fig(panels), "mixture shares")
    return body


def tune_section(run: Run) -> str:
    if run.stage("tune") is None:
        return H.note("no tune stage in this run")
    try:
        art = run.artifact("tune")
    except KamadoError as e:
        return H.note(str(e))
    body = ""
    methods = art.methods
    if methods:
        rows = [[m, r.get("trainable_params"), r.get("trainable_pct"), r.get("wall_s"), r.get("tokens_per_s"),
                 r.get("steps"), r.get("lr"), r.get("final_train_loss"), r.get("val_loss_before"),
                 r.get("val_loss_after")] for m, r in methods.items()]
        body += H.table(["method", "trainable params", "trainable %", "wall s", "tokens/s", "steps", "lr",
                         "final train loss", "val loss before", "val loss after"], rows)
        data = art.data
        body += H.details("instruction data", H.kv_table(_scalars(data)) + H.table(
            ["source", *list(_scalars(next(iter(data.get("sources", {}).values()), {})).keys())],
            [[n, *_scalars(v).values()] for n, v in (data.get("sources") or {}).items()]))
        if art.summary.get("chat_template"):
            body += H.details("chat template", H.pre(art.summary["chat_template"]))
    else:
        body += H.note("tune/tune.json missing: showing whatever metrics exist")
    panels_train, panels_val = [], []
    for m in art.method_names():
        train, val = _train_records(read_records(art.metrics_path(m)))
        if train:
            panels_train.append(Series(m, [r["step"] for r in train], [r["loss"] for r in train]))
        panels_val += [Series(f"{m} {s.label}", s.x, s.y, points=True) for s in _val_series(val)]
    if panels_train:
        body += H.figure(panels_fig([Panel("tuning loss (answer tokens)", panels_train, ylabel="cross-entropy"),
                                  Panel("held-out loss", panels_val, ylabel="cross-entropy")]), "tuning loss")
    elif not methods:
        return H.note("tune stage has no tune.json and no metrics.jsonl")
    return body


BOOKKEEPING = ("n", "n_total", "shots", "seconds", "tokens", "chars", "examples", "limit")


def _bookkeeping(metric: str) -> bool:
    return metric in BOOKKEEPING or metric.startswith(("tokens_", "chars_", "n_", "tokens@", "chars@", "docs"))


def _metric_columns(models: dict[str, Any]) -> list[tuple[str, str]]:
    """(task, metric) pairs with numeric values, in first-seen order (``n`` excluded)."""
    cols: list[tuple[str, str]] = []
    for tasks in models.values():
        for task, mets in (tasks or {}).items() if isinstance(tasks, dict) else []:
            for met, v in (mets or {}).items() if isinstance(mets, dict) else []:
                if met != "n" and _num(v) is not None and (task, met) not in cols:
                    cols.append((task, met))
    return cols


def _lower_better(metric: str) -> bool:
    return any(w in metric.lower() for w in LOWER_IS_BETTER)


def results_table(rows_by_model: dict[str, dict[str, Any]]) -> tuple[str, list[tuple[str, str]]]:
    """One table per task (models × headline metrics, ``± stderr`` where given, best in bold), with the
    bookkeeping numbers (token counts, seconds, shots) in a collapsed table; returns HTML and the
    headline (task, metric) pairs."""
    cols = _metric_columns(rows_by_model)
    if not cols:
        return H.note("no numeric results"), []
    tasks = list(dict.fromkeys(t for t, _ in cols))
    html, shown = "", []
    for task in tasks:
        mets = [m for t, m in cols if t == task]
        main = [m for m in mets if not m.endswith("_stderr") and not _bookkeeping(m)]
        side = [m for m in mets if _bookkeeping(m)]
        if task == "perplexity" and any("bpc" in m for m in main):  # bpc with the unigram floor; ppl aside
            side += [m for m in main if "bpc" not in m]
            main = [m for m in main if "bpc" in m]
        ns = sorted({str((t.get(task) or {}).get("n")) for t in rows_by_model.values()
                     if isinstance(t.get(task), dict) and (t.get(task) or {}).get("n") is not None})
        html += H.heading(task, f"(n={', '.join(ns)})" if ns else None)
        rows, bold = [], set()
        for name, per in rows_by_model.items():
            rec = per.get(task) if isinstance(per.get(task), dict) else {}
            cells = []
            for m in main:
                v, se = rec.get(m), rec.get(f"{m}_stderr")
                cells.append(f"{H.fmt(v)} ± {H.fmt(se)}" if _num(v) is not None and _num(se) is not None else v)
            rows.append([name, *cells])
        for j, m in enumerate(main, 1):
            vals = [(i, (rows_by_model[n].get(task) or {}).get(m)) for i, n in enumerate(rows_by_model)]
            vals = [(i, v) for i, v in vals if _num(v) is not None]
            if len(vals) > 1:
                bold.add(((min if _lower_better(m) else max)(vals, key=lambda x: x[1])[0], j))
        html += H.table(["model", *main], rows, bold=bold)
        if side:
            html += H.details(f"{task}: counts and timings", H.table(
                ["model", *side], [[n, *[(per.get(task) or {}).get(m) for m in side]]
                                   for n, per in rows_by_model.items()]))
        shown += [(task, m) for m in main]
    return html, shown


def eval_section(run: Run) -> str:
    if run.stage("eval") is None:
        return H.note("no eval stage in this run")
    try:
        art = run.artifact("eval")
    except KamadoError as e:
        return H.note(f"eval/results.json missing or without models: {e}")
    models = art.models
    if not models:
        return H.note("eval/results.json missing or without models")
    body, cols = results_table(models)
    body += "<p class=\"sub\">Bold: best model per column (lowest for perplexity/loss-like metrics).</p>"
    shown = [(t, m, _lower_better(m)) for t, m in cols][:16]
    values = {(t, m): [_num((models[n].get(t) or {}).get(m)) for n in models] for t, m, _ in shown}
    body += H.img(metric_bars_png(shown, list(models), values), "results per metric")
    others = art.other_files()
    if others:
        body += H.details("other files of the eval stage", H.pre("\n".join(others)))
    return body


def compare_section(runs: list[Run]) -> str:
    """Loss curves and results of several runs on the same axes."""
    body = H.table(["run", "folder", "stages", "total wall s", "git commit"], [
        [r.name, str(r.dir), ", ".join(r.manifests), sum(_num((m.get("timings") or {}).get("wall_s")) or 0
                                                        for m in r.manifests.values()),
         next((m.get("git_commit") for m in r.manifests.values() if m.get("git_commit")), None)] for r in runs],
        text_cols=(1, 2, 4))
    names = _unique_names(runs)
    pre_train, pre_val, pre_events = [], [], []
    for k, (r, n) in enumerate(zip(runs, names, strict=True)):
        pre = r.artifact_or_none("pretrain")
        color = PALETTE[k % len(PALETTE)]  # a run's curves and its guard events share one colour
        if pre is not None:
            train, val = _train_records(pre.metrics())
            if train:
                pre_train.append(Series(n, [x["step"] for x in train], [x["loss"] for x in train], color=color))
                pre_events += _run_events(pre.path / "events.jsonl", n, color)
            pts = [(x["step"], x["val_loss"]) for x in val if _num(x.get("val_loss")) is not None]
            if pts:
                pre_val.append(Series(n, [p[0] for p in pts], [p[1] for p in pts], points=True, color=color))
    body += H.figure(panels_fig([Panel("pretraining loss", pre_train, ylabel="cross-entropy", events=pre_events),
                              Panel("pretraining val loss", pre_val, ylabel="cross-entropy")]), "pretrain compare")
    tune_series, tune_events = [], []
    for r, n in zip(runs, names, strict=True):
        tune = r.artifact_or_none("tune")
        for m in tune.method_names() if tune is not None else []:
            train, _ = _train_records(read_records(tune.metrics_path(m)))
            if train:
                color = PALETTE[len(tune_series) % len(PALETTE)]
                tune_series.append(Series(f"{n} {m}", [x["step"] for x in train], [x["loss"] for x in train],
                                          dashed=m == "lora", color=color))
                tune_events += _run_events(Path(tune.metrics_path(m)).parent / "events.jsonl", f"{n} {m}", color)
    body += H.figure(panels_fig([Panel("tuning loss", tune_series, ylabel="cross-entropy", events=tune_events)]),
                     "tune compare")
    merged: dict[str, dict[str, Any]] = {}
    for r, n in zip(runs, names, strict=True):
        ev = r.artifact_or_none("eval")
        for model, tasks in ev.models.items() if ev is not None else []:
            merged[f"{n}: {model}"] = tasks
    if merged:
        body += "<h3>Results</h3>" + results_table(merged)[0]
    return body


def _unique_names(runs: list[Run]) -> list[str]:
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{r.name} ({r.dir.name})" for r in runs]
    if len(set(names)) < len(names):
        names = [f"{i + 1}: {n}" for i, n in enumerate(names)]
    return names


SECTIONS: list[tuple[str, str, Callable[[Run], str]]] = [
    ("overview", "Run summary", overview),
    ("corpus", "Corpus", corpus_section),
    ("tokenizer", "Tokenizer", tokenizer_section),
    ("data", "Token packing", data_section),
    ("pretrain", "Pretraining", pretrain_section),
    ("tune", "Instruction tuning: full vs LoRA", tune_section),
    ("eval", "Evaluation", eval_section),
    ("manifests", "Stage manifests", manifests_section),
]


def build_report(run_dirs: list[Path], title: str | None = None) -> tuple[str, dict[str, Any]]:
    """The report HTML for ``run_dirs[0]`` (plus a comparison when more runs are given), and counts."""
    runs = [load_run(Path(d)) for d in run_dirs]
    run = runs[0]
    sections, missing = [], []
    for anchor, name, fn in SECTIONS:
        try:
            body = fn(run)
        except Exception as e:  # a malformed artifact must not lose the rest of the report
            body = H.note(f"could not read this section's inputs: {type(e).__name__}: {e}")
        if body.startswith('<p class="note">'):
            missing.append(anchor)
        sections.append(H.Section(anchor, name, body))
    if len(runs) > 1:
        try:
            body = compare_section(runs)
        except Exception as e:
            body = H.note(f"could not compare runs: {type(e).__name__}: {e}")
        sections.insert(1, H.Section("compare", "Runs compared", body))
    title = title or f"kamado report: {run.name}"
    commit = next((m.get("git_commit") for m in run.manifests.values() if m.get("git_commit")), None)
    subtitle = (f"run folder {run.dir.resolve().name} · generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
                + (f" · git {commit}" if commit else "")
                + (f" · compared with {', '.join(r.name for r in runs[1:])}" if len(runs) > 1 else ""))
    doc = H.page(title, subtitle, sections)
    counts = ReportCounts(sections=len(sections), sections_missing=len(missing), plots=doc.count("data:image/png"),
                          bytes=len(doc.encode()), missing=",".join(missing)).to_counts()
    return doc, counts


def run(cfg: ReportConfig, ctx: StageContext) -> dict[str, Any]:
    """Write ``ctx.out/report.html`` and copy it to ``<run>/report.html``."""
    run_dir = ctx.run_dir or ctx.out.parent
    doc, counts = build_report([run_dir], cfg.title)
    out = ctx.out / "report.html"
    write_text_atomic(out, doc)
    shutil.copyfile(out, run_dir / "report.html")
    return counts
