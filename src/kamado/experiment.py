"""Experiments: one recipe, several variants and seeds, one comparison table.

A recipe with an ``experiment:`` section runs each variant (a set of ``a.b.c: value`` overrides of the
recipe) for each seed into ``OUT/<variant>/s<seed>``. Every stage lives once in ``OUT/.stages`` under
its fingerprint, so variants share the stages they do not change (a mixture ablation retrains, but
does not re-clean or re-tokenize). The seed is varied from ``seed_from`` on (default: pretraining); the
stages before it keep the recipe's seed and are shared by every seed, and eval keeps it too, so every run is
scored on the same held-out texts and examples.

At the end ``OUT/experiment.json`` and ``OUT/experiment.md`` hold, per variant and metric, the mean and
the spread over seeds, and ``OUT/experiment.html`` overlays the variants' curves.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from kamado import folders
from kamado.config import ConfigError, KamadoError, StrictModel, format_validation_error
from kamado.manifest import read_manifest, write_json_atomic
from kamado.recipe import RecipeBase, parse_recipe
from kamado.stage import STAGE_NAMES

# metrics that say something at CPU scale: held-out bits per character, losses; tasks where asked for
DEFAULT_METRICS = ("bpc_ja", "bpc_en", "val_loss", "final_loss")


class Selection(StrictModel):
    """``experiment.select``: choose one variant per group by a metric, then compare the chosen ones.

    The choice is made on one metric (e.g. the answer loss on one slice of held-out data) and the chosen
    variants are compared on others (the same loss on another slice), so the report is not measured on the
    text the choice was made on.
    """

    by: str  # the exact metric name (after ``rename``) that chooses, averaged over seeds
    maximize: bool = False  # higher ``by`` is better (default: lower, as a loss)
    groups: dict[str, list[str]] = Field(min_length=1)  # group -> its candidate variants
    compare: list[tuple[str, str]] = Field(default_factory=list)  # group pairs whose chosen variants are compared
    metrics: list[str] | None = None  # substrings of the metrics compared (default: experiment.metrics)


class ExperimentConfig(StrictModel):
    """The ``experiment:`` section of a recipe."""

    variants: dict[str, dict[str, Any]] = Field(min_length=1)  # name -> {dot.path: value}
    seeds: list[int] = Field(default_factory=list, max_length=16)  # default: the recipe's seed
    seed_from: str = "pretrain"  # the first stage whose seed varies; earlier stages are shared
    metrics: list[str] = list(DEFAULT_METRICS)  # substrings of metric names to tabulate
    # substrings of the metric names to compare between variants (default: ``metrics``): leave out what a
    # variant sets rather than measures (parameters, tokens)
    compare: list[str] | None = None
    models: list[str] | None = None  # eval models to tabulate (default: all)
    # pairs [baseline, variant] to compare (default: every variant against the first)
    comparisons: list[tuple[str, str]] | None = None
    # metric-name prefixes renamed in every run, so that runs whose models differ in name compare (e.g.
    # {tune/full.: tuned., tune/lora.: tuned.} when each variant tunes with one method)
    rename: dict[str, str] = Field(default_factory=dict)
    select: Selection | None = None
    description: str = ""

    @field_validator("seed_from")
    @classmethod
    def _stage(cls, v: str) -> str:
        if v not in STAGE_NAMES:
            raise ValueError(f"{v!r} is not a stage ({', '.join(STAGE_NAMES)})")
        return v

    @field_validator("variants")
    @classmethod
    def _names(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in v:
            try:
                folders.folder_name(name, "variant name")
            except KamadoError as e:
                raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _pairs(self) -> ExperimentConfig:
        for a, b in self.comparisons or []:
            bad = [x for x in (a, b) if x not in self.variants]
            if bad or a == b:
                raise ValueError(f"comparisons: [{a}, {b}]: " + (f"no variant {', '.join(bad)} (variants: "
                                 f"{', '.join(self.variants)})" if bad else "a variant against itself"))
        if self.select:
            for g, vs in self.select.groups.items():
                bad = [v for v in vs if v not in self.variants]
                if bad or not vs:
                    raise ValueError(f"select.groups.{g}: " + (f"no variant {', '.join(bad)} (variants: "
                                     f"{', '.join(self.variants)})" if bad else "no candidate variants"))
            for a, b in self.select.compare:
                bad = [x for x in (a, b) if x not in self.select.groups]
                if bad or a == b:
                    raise ValueError(f"select.compare: [{a}, {b}]: " + (f"no group {', '.join(bad)} (groups: "
                                     f"{', '.join(self.select.groups)})" if bad else "a group against itself"))
        return self

    def pairs(self) -> list[tuple[str, str]]:
        """(baseline, variant) pairs to compare."""
        if self.comparisons is not None:
            return [tuple(p) for p in self.comparisons]  # type: ignore[misc]
        first, *rest = list(self.variants)
        return [(first, v) for v in rest]


def split_experiment(data: dict[str, Any], source: str) -> tuple[dict[str, Any], ExperimentConfig | None]:
    """The recipe mapping without its ``experiment`` section, and that section validated (or None)."""
    if not isinstance(data, dict) or "experiment" not in data:
        return data, None
    data = dict(data)
    raw = data.pop("experiment")
    try:
        return data, ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid recipe\n" + format_validation_error(e, "experiment")) from None


def _set_path(data: dict[str, Any], key: str, value: Any, where: str) -> None:
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: {key}: {p} is not a mapping in the recipe")
        node = nxt
    node[parts[-1]] = copy.deepcopy(value)


def expand(data: dict[str, Any], exp: ExperimentConfig, source: str) -> dict[str, dict[int, RecipeBase]]:
    """Every variant × seed as a validated recipe; all are checked before any work starts."""
    seeds = exp.seeds or [int(data.get("seed", RecipeBase.model_fields["seed"].default))]
    out: dict[str, dict[int, RecipeBase]] = {}
    for name, overrides in exp.variants.items():
        d = copy.deepcopy(data)
        for key, value in overrides.items():
            _set_path(d, key, value, f"{source}: experiment.variants.{name}")
        d["name"] = f"{data.get('name', 'run')}/{name}"
        out[name] = {}
        for seed in seeds:
            try:
                out[name][seed] = parse_recipe(copy.deepcopy(d), f"{source} (variant {name}, seed {seed})")
            except ConfigError as e:
                raise ConfigError(f"experiment.variants.{name}: {e}") from None
    return out


# stages that measure rather than make a model: they keep the recipe's seed in every run, so every variant and
# seed is scored on the same evaluation subset (the eval seed picks the held-out documents and examples; varying
# it made the spread over seeds mostly a spread over evaluation texts)
MEASURING_STAGES = ("eval", "report")


def stage_seeds(recipe: RecipeBase, seed: int, seed_from: str) -> dict[str, int]:
    """The seed of each stage: the recipe's before ``seed_from`` and in the measuring stages, the run's
    for the others from ``seed_from`` on."""
    first = STAGE_NAMES.index(seed_from)
    return {s: (seed if STAGE_NAMES.index(s) >= first and s not in MEASURING_STAGES else recipe.seed)
            for s in STAGE_NAMES}


def renamed(metrics: dict[str, float], rename: dict[str, str]) -> dict[str, float]:
    """``metrics`` with each name that starts with a key of ``rename`` given that key's value instead."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        for old, new in rename.items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def run_metrics(run_dir: Path, models: list[str] | None = None) -> dict[str, float]:
    """Flat metrics of one finished run: ``<model>.<task>.<metric>`` from eval, losses, parameters and tokens
    from training."""
    out: dict[str, float] = {}
    pre = read_manifest(run_dir / "pretrain")
    for k in ("final_loss", "val_loss", "tokens_per_s", "params", "tokens"):
        v = (pre or {}).get("counts", {}).get(k)
        if isinstance(v, int | float):
            out[f"pretrain.{k}"] = float(v)
    tok = read_manifest(run_dir / "tokenizer")
    for k, v in ((tok or {}).get("counts") or {}).items():  # chars_per_token_<lang> on held-out text
        if k.startswith("chars_per_token_") and isinstance(v, int | float) and not isinstance(v, bool):
            out[f"tokenizer.{k}"] = float(v)
    tune = read_manifest(run_dir / "tune")
    for k, v in ((tune or {}).get("counts") or {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool) and "loss" in k:
            out[f"tune.{k}"] = float(v)
    if read_manifest(run_dir / "eval") is not None:
        from kamado.eval.artifacts import EvalArtifact

        art = EvalArtifact.open(run_dir / "eval")
        for model, tasks in art.models.items():
            if models and model not in models:
                continue
            for task, mets in (tasks or {}).items():
                for k, v in (mets or {}).items():
                    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                        out[f"{model}.{task}.{k}"] = float(v)
    return out


def _wanted(metric: str, patterns: list[str]) -> bool:
    return not metric.endswith("_stderr") and any(p in metric for p in patterns)


def summarise(per_run: dict[str, dict[int, dict[str, float]]], patterns: list[str]) -> dict[str, Any]:
    """Per variant and metric: mean, sample std over seeds, n, and the mean within-run standard error."""
    table: dict[str, dict[str, Any]] = {}
    for variant, by_seed in per_run.items():
        names = sorted({m for mets in by_seed.values() for m in mets if _wanted(m, patterns)})
        row: dict[str, Any] = {}
        for m in names:
            xs = [mets[m] for mets in by_seed.values() if m in mets]
            ses = [mets[f"{m}_stderr"] for mets in by_seed.values() if f"{m}_stderr" in mets]
            row[m] = {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None,
                      "n": len(xs), "values": xs, "stderr": statistics.fmean(ses) if ses else None}
        table[variant] = row
    return table


def _items(run_dir: Path, model: str, task: str) -> dict[str, tuple[float, int, str, str]]:
    """Per-item (nll, weight, source, language) of a run's evaluation of ``model`` on ``task``, by id: for
    perplexity the documents' nll and characters, for instruction tasks the answers' nll and tokens."""
    from kamado.eval.artifacts import EvalArtifact, safe_name
    from kamado.jsonl import iter_jsonl

    if read_manifest(run_dir / "eval") is None:
        return {}
    art = EvalArtifact.open(run_dir / "eval")
    f = run_dir / "eval" / art.details.get(model, f"details/{safe_name(model)}") / f"{task}.jsonl"
    if not f.is_file():
        return {}
    out = {}
    for r in iter_jsonl(f):
        if task == "perplexity" and r.get("id") and r.get("tokens"):
            out[r["id"]] = (float(r["nll"]), int(r["chars"]), r.get("source", ""), r.get("lang", ""))
        elif r.get("id") is not None and r.get("answer_tokens"):
            out[str(r["id"])] = (float(r["answer_nll"]), int(r["answer_tokens"]), task, "")
    return out


def _real_model(alias: str, rename: dict[str, str], run_dir: Path, task: str) -> str:
    """The run's own name of a (possibly renamed) model: the first original whose details exist."""
    for old, new in rename.items():
        if new.endswith(".") and new[:-1] == alias and old.endswith("."):
            if _items(run_dir, old[:-1], task):
                return old[:-1]
    return alias


def _doc_filter(name: str) -> Any:
    """Which documents a perplexity bpc metric covers (``bpc``, ``bpc_ja``, ``bpc@ja_wiki``), or None."""
    if name == "bpc":
        return lambda src, lang: True
    if name.startswith("bpc@"):
        return lambda src, lang: src == name[4:]
    if name.startswith("bpc_") and not name.endswith(("_stderr", "_ci95")):
        return lambda src, lang: lang == name[4:]
    return None


def _shared(metric: str, base: str, var: str, seeds: list[int], dirs: dict[tuple[str, int], Path]) -> bool:
    """Whether both variants took ``metric`` from one shared stage in every seed: the tokenizer for
    ``tokenizer.*``, the pretrained model for ``pretrain.*`` (its losses and its evaluation), else the tuning."""
    head = metric.split(".", 1)[0]
    stage = head if head in ("tokenizer", "pretrain") else "tune"
    try:
        return all((dirs[(base, s)] / stage).resolve() == (dirs[(var, s)] / stage).resolve() for s in seeds)
    except KeyError:
        return False


def compare(pairs: list[tuple[str, str]], per_run: dict[str, dict[int, dict[str, float]]],
            dirs: dict[tuple[str, int], Path], patterns: list[str],
            rename: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """For each (baseline, variant) pair and metric: per-seed paired differences (variant − baseline), their
    mean, a 95% interval and ``resolved`` (the interval excludes 0). Bits per character and answer losses are
    paired on the same documents / examples and resampled over them and seeds; other metrics get a t interval
    over seeds."""
    import numpy as np

    from kamado.eval.metrics import paired_bootstrap, t_interval

    out: list[dict[str, Any]] = []
    docs_cache: dict[tuple[str, int, str, str], dict[str, tuple[float, int, str, str]]] = {}
    for base, var in pairs:
        seeds = sorted(set(per_run.get(base, {})) & set(per_run.get(var, {})))
        # the unigram floor is a property of the training text, not a result of the seed: shown, not compared
        metrics = sorted({m for s in seeds for m in per_run[base][s] if _wanted(m, patterns) and "unigram_" not in m
                          and all(m in per_run[v][s] for v in (base, var))})
        for m in metrics:
            diffs = [per_run[var][s][m] - per_run[base][s][m] for s in seeds]
            if all(d == 0 for d in diffs) and _shared(m, base, var, seeds, dirs):
                continue  # measured on one shared model or stage (e.g. the base of two tunings): nothing to compare
            parts = m.split(".")
            task = parts[-2] if len(parts) >= 3 else ""
            keep = _doc_filter(parts[-1]) if task == "perplexity" else None
            per_item = keep is not None or parts[-1] == "answer_loss"
            if keep is None:
                keep = lambda src, lang: True  # noqa: E731 - every answer of the task
            row: dict[str, Any] = {"baseline": base, "variant": var, "metric": m, "seeds": seeds,
                                   "diffs": [round(d, 6) for d in diffs]}
            if per_item:
                model = ".".join(parts[:-2])
                per = {}
                for v in (base, var):
                    for s in seeds:
                        real = _real_model(model, rename or {}, dirs[(v, s)], task)
                        key = (v, s, real, task)
                        if key not in docs_cache:
                            docs_cache[key] = _items(dirs[(v, s)], real, task)
                        per[(v, s)] = {i: d for i, d in docs_cache[key].items() if keep(d[2], d[3])}
                ids = sorted(set.intersection(*(set(x) for x in per.values()))) if per else []
                if ids:
                    a = np.array([[per[(base, s)][i][0] for i in ids] for s in seeds])
                    b = np.array([[per[(var, s)][i][0] for i in ids] for s in seeds])
                    chars = np.array([per[(base, seeds[0])][i][1] for i in ids])
                    mean, lo, hi = paired_bootstrap(a, b, chars, seed=f"{base}:{var}:{m}")
                    unit = math.log(2) if task == "perplexity" else 1.0  # bits per character; nats per token
                    row |= {"mean": mean / unit, "ci95": [lo / unit, hi / unit], "documents": len(ids),
                            "interval": "bootstrap over " + ("documents" if task == "perplexity" else "examples")
                            + " and seeds"}
            if "ci95" not in row:
                mean, lo, hi = t_interval(diffs)
                if not (math.isfinite(lo) and math.isfinite(hi)):
                    continue  # one seed and no documents to pair: nothing to say
                row |= {"mean": mean, "ci95": [lo, hi], "interval": "t over seeds"}
            row["resolved"] = bool(row["ci95"][0] > 0 or row["ci95"][1] < 0)
            out.append(row)
    return out


def choose(sel: Selection, per_run: dict[str, dict[int, dict[str, float]]]) -> dict[str, Any]:
    """Per group: every candidate's mean of ``sel.by`` over its seeds and the best one (None when no candidate
    has the metric)."""
    groups: dict[str, Any] = {}
    for g, variants in sel.groups.items():
        scores = {}
        for v in variants:
            xs = [m[sel.by] for m in per_run.get(v, {}).values() if sel.by in m]
            if xs:
                scores[v] = statistics.fmean(xs)
        pick = (max if sel.maximize else min)(scores, key=scores.__getitem__) if scores else None
        groups[g] = {"chosen": pick, "scores": scores}
    return {"by": sel.by, "maximize": sel.maximize, "groups": groups}


def selection_markdown(selection: dict[str, Any] | None) -> str:
    """Which variant each group chose, and the scores it chose by."""
    if not selection:
        return ""
    word = "highest" if selection["maximize"] else "lowest"
    lines = ["", f"## Selection: per group, the variant with the {word} mean `{selection['by']}` over seeds", "",
             "| group | chosen | candidates (mean) |", "|---|---|---|"]
    for g, sel in selection["groups"].items():
        cands = ", ".join(f"{v} {x:.4f}" for v, x in sel["scores"].items())
        lines.append(f"| {g} | {sel['chosen'] or '—'} | {cands} |")
    return "\n".join(lines) + "\n"


def comparisons_markdown(comps: list[dict[str, Any]]) -> str:
    """The comparisons as a table, in words: resolved, or not resolved at this budget."""
    if not comps:
        return ""
    lines = ["", "## Comparisons (variant − baseline)", "",
             "Paired on the same evaluation text and seeds; 95% intervals. *Resolved* means the interval excludes "
             "zero; anything else is *not resolved at this budget*.", "",
             "| baseline | variant | metric | mean difference | 95% interval | seeds | resolved? |",
             "|---|---|---|---|---|---|---|"]
    for c in comps:
        word = "resolved" if c["resolved"] else "not resolved at this budget"
        lines.append(f"| {c['baseline']} | {c['variant']} | {c['metric']} | {c['mean']:+.4f} | "
                     f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | {len(c['seeds'])} | {word} |")
    return "\n".join(lines) + "\n"


def _cell(c: dict[str, Any] | None) -> str:
    if not c:
        return "—"
    s = f"{c['mean']:.4g}"
    if c.get("std") is not None:
        s += f" ± {c['std']:.2g}"
    elif c.get("stderr") is not None:
        s += f" (se {c['stderr']:.2g})"
    return s


def markdown(title: str, summary: dict[str, Any], seeds: list[int], walls: dict[str, float],
             total_wall: float | None = None) -> str:
    """One Markdown table: variants as rows, metrics as columns (mean ± std over seeds)."""
    metrics = sorted({m for row in summary.values() for m in row})
    wall = f" Stage time {sum(walls.values()):.0f} s in all (from the stage manifests; `wall s` of a variant " \
           "counts each stage once, in the first variant that uses it: shared stages go to the first)."
    if total_wall is not None:
        wall += f" This invocation took {total_wall:.0f} s."
    lines = [f"# {title}", "", f"Seeds: {', '.join(map(str, seeds))}. Cells: mean ± sample std over seeds "
             "(one seed: mean and its standard error over documents)." + wall, "",
             "| variant | " + " | ".join(metrics) + " | wall s |",
             "|---|" + "---|" * (len(metrics) + 1)]
    for variant, row in summary.items():
        lines.append(f"| {variant} | " + " | ".join(_cell(row.get(m)) for m in metrics)
                     + f" | {walls.get(variant, 0):.0f} |")
    return "\n".join(lines) + "\n"


def run_experiment(data: dict[str, Any], exp: ExperimentConfig, out: Path, *, source: str,
                   recipe_dir: Path | None, data_root: Path | None, until: str | None = None,
                   force: str | None = None) -> dict[str, Any]:
    """Run every variant × seed, sharing unchanged stages; write the comparison table and report."""
    from rich.markup import escape

    from kamado.ui import console

    t_start = time.perf_counter()
    runs = expand(data, exp, source)
    seeds = exp.seeds or [next(iter(next(iter(runs.values())).values())).seed]
    folders.check_ours(out, "--out")  # a user's folder is refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with folders.RunLock(out, "kamado run (experiment)") as lock:
        if lock.stale:
            console.print(f"[yellow]warning:[/] {escape(lock.stale)}", highlight=False)
        folders.mark(out, "experiment", recipe=data.get("name"))
        return _run_variants(data, exp, out, runs, seeds, t_start, recipe_dir=recipe_dir, data_root=data_root,
                             until=until, force=force)


def _run_variants(data: dict[str, Any], exp: ExperimentConfig, out: Path, runs: dict[str, dict[int, RecipeBase]],
                  seeds: list[int], t_start: float, *, recipe_dir: Path | None, data_root: Path | None,
                  until: str | None, force: str | None) -> dict[str, Any]:
    from kamado.runner import run_recipe, summary_table
    from kamado.ui import console

    store = out / ".stages"
    per_run: dict[str, dict[int, dict[str, float]]] = {}
    walls: dict[str, float] = {}
    counted: set[Path] = set()
    dirs: list[Path] = []
    run_dirs: dict[tuple[str, int], Path] = {}
    for variant, by_seed in runs.items():
        for seed, recipe in by_seed.items():
            rdir = out / variant / f"s{seed}"
            console.rule(f"[bold]experiment[/] {variant} · seed {seed}")
            outcomes = run_recipe(recipe, rdir, recipe_dir=recipe_dir, data_root=data_root, until=until,
                                  force=force, seeds=stage_seeds(recipe, seed, exp.seed_from), store=store)
            console.print(summary_table(outcomes))
            # stage seconds from the manifests (also for stages reused from an earlier invocation), each
            # stage folder counted once: in the first variant that uses it
            walls.setdefault(variant, 0.0)
            for o in outcomes:
                sd = (rdir / o.stage).resolve()
                if sd not in counted:
                    counted.add(sd)
                    wall_s = ((read_manifest(rdir / o.stage) or {}).get("timings") or {}).get("wall_s")
                    walls[variant] += float(wall_s) if isinstance(wall_s, int | float) else o.seconds
            per_run.setdefault(variant, {})[seed] = renamed(run_metrics(rdir, exp.models), exp.rename)
            dirs.append(rdir)
            run_dirs[(variant, seed)] = rdir
    summary = summarise(per_run, exp.metrics)
    comps = compare(exp.pairs(), per_run, run_dirs, exp.compare or exp.metrics, exp.rename)
    selection = None
    if exp.select:
        selection = choose(exp.select, per_run)
        chosen = {g: sel["chosen"] for g, sel in selection["groups"].items()}
        pairs = [(chosen[a], chosen[b]) for a, b in exp.select.compare if chosen[a] and chosen[b]]
        for row in compare(pairs, per_run, run_dirs, exp.select.metrics or exp.compare or exp.metrics, exp.rename):
            ga = next(g for g, v in chosen.items() if v == row["baseline"])
            gb = next(g for g, v in chosen.items() if v == row["variant"])
            comps.append(row | {"groups": [ga, gb], "selected_by": exp.select.by})
    total_wall = time.perf_counter() - t_start
    title = f"experiment {data.get('name', out.name)}"
    doc = {"name": data.get("name"), "description": exp.description, "seeds": seeds,
           "variants": {k: v for k, v in exp.variants.items()}, "seed_from": exp.seed_from,
           "wall_s": round(sum(walls.values()), 1), "wall_s_by_variant": walls, "invocation_s": round(total_wall, 1),
           "summary": summary, "comparisons": comps, "selection": selection,
           "runs": [{"variant": v, "seed": s, "dir": str(run_dirs[(v, s)].relative_to(out)), "metrics": m}
                    for v, r in per_run.items() for s, m in r.items()]}
    write_json_atomic(out / "experiment.json", doc)
    md = markdown(title, summary, seeds, walls, total_wall) + selection_markdown(selection) + comparisons_markdown(comps)
    if exp.description:
        md = md.replace("\n\n", f"\n\n{exp.description.strip()}\n\n", 1)
    (out / "experiment.md").write_text(md, encoding="utf-8")
    _overlay_report(dirs, out / "experiment.html", title)
    console.print(md)
    return doc


def _overlay_report(dirs: list[Path], dest: Path, title: str) -> None:
    """One report comparing every variant's run (curves overlaid)."""
    from kamado.report.stage import build_report

    try:
        html, _ = build_report(dirs, title)
    except KamadoError as e:  # a report is a view: its failure does not undo the runs
        from kamado.ui import console

        console.print(f"[yellow]experiment report not written:[/] {e}")
        return
    dest.write_text(html, encoding="utf-8")
