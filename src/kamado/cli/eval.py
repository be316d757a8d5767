"""``kamado eval`` (benchmarks and perplexity on model folders) and ``kamado judge`` (MT-Bench-style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kamado.cli.options import field_default, option, recipe_option
from kamado.config import KamadoError, parse_assignments
from kamado.eval.config import EvalConfig
from kamado.eval.judge import JudgeSettings
from kamado.stage import DEFAULT_SEED

DataRoot = Annotated[Path | None, typer.Option("--data-root", help="Folder of the shared data sets "
                                               "(default: $KAMADO_DATA_ROOT, else ../shared/data).")]


def _parse_fewshot(items: list[str] | None) -> dict[str, int]:
    return parse_assignments(items, "--fewshot", int, "jcommonsenseqa=3")


def main_metric(task: str, m: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The headline metrics of a task result: (name, value, stderr or a 95% interval)."""
    from kamado.eval.tasks import TASKS

    if task == "perplexity":  # bpc per source with its interval, the unigram floor beside it
        rows = []
        for k in sorted(k for k in m if k.startswith("bpc@") and not k.endswith(("_ci95", "_stderr"))):
            ci = m.get(f"{k}_ci95")
            rows.append((k, m[k], f"[{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list) else None))
            if m.get(f"unigram_{k}") is not None:
                rows.append((f"unigram_{k}", m[f"unigram_{k}"], None))
        return rows or [(k, m[k], m.get(f"{k}_stderr")) for k in ("bpc",) if m.get(k) is not None]
    own = TASKS[task].metrics if task in TASKS else ()
    keys = list(own) or {"jsts": ["pearson", "spearman"], "jsquad": ["exact_match", "char_f1"],
                         "truthfulqa-mc": ["mc1", "mc2"]}.get(task, ["acc", "acc_norm"])
    return [(k, m[k], m.get(f"{k}_stderr")) for k in keys if m.get(k) is not None]


def results_rows(results: dict[str, dict[str, dict[str, Any]]]) -> list[list[Any]]:
    """Table rows (model, task, metric, value, ±stderr, n) for a results mapping."""
    rows = []
    for model, per in results.items():
        for task, m in per.items():
            for k, v, se in main_metric(task, m):
                shown = "" if se is None else se if isinstance(se, str) else f"±{se:.3g}"
                rows.append([model, task, k, float(v), shown, m.get("n", "")])
    return rows


def evaluate(
    models: Annotated[list[Path], typer.Argument(help="Hugging Face model folders (config.json + tokenizer).")],
    tasks: str | None = recipe_option(EvalConfig, "tasks", "--tasks", "-t", section="eval",
                                      note="A comma list on the command line."),
    limit: int | None = recipe_option(EvalConfig, "limit", "--limit", "-n", section="eval",
                                      note="0 on the command line: all."),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write results.json, details and manifest.json "
                                             "here (default: a temporary folder).")] = None,
    fewshot: list[str] | None = recipe_option(EvalConfig, "fewshot", section="eval",
                                              note="Here: TASK=K, repeatable."),
    batch_size: int | None = recipe_option(EvalConfig, "batch_size", section="eval"),
    seed: Annotated[int, typer.Option(help="Seed of the subset and few-shot sampling.")] = DEFAULT_SEED,
    ppl_source: list[str] | None = recipe_option(EvalConfig, "ppl_sources", "--ppl-source", section="eval",
                                                 note="Repeatable; a pack folder (with pack.json) is read as pack."),
    ppl_max_chars: int | None = recipe_option(EvalConfig, "ppl_max_chars", section="eval"),
    dtype: str | None = recipe_option(EvalConfig, "dtype", section="eval"),
    threads: int | None = recipe_option(EvalConfig, "threads", section="eval"),
    tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer folder when the model folder has none.")] = None,
    backend: str | None = recipe_option(EvalConfig, "backend", section="eval"),
    prompts: str | None = recipe_option(EvalConfig, "prompts", section="eval"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other eval setting: KEY=VALUE "
                                                   "(e.g. ppl_window=1024).")] = None,
    data_root: DataRoot = None,
) -> None:
    """Evaluate models on Japanese/English benchmarks (log-likelihood multiple choice, generation) and perplexity.

    Runs the eval stage of `kamado run` on the given model folders: every option overrides the same field
    of the recipe's ``eval`` section, with the same defaults. Results carry standard errors; per-example
    predictions go to OUT/details/<model>/<task>.jsonl.

    Examples:
      kamado eval runs/tiny/pretrain/hf --tasks jcommonsenseqa,arc-easy,perplexity --limit 200 --out runs/ev
      kamado eval runs/tiny/tune/full/hf runs/tiny/tune/lora/hf --tasks jglue --limit 100
      kamado eval MODEL --tasks perplexity --ppl-source wikitext2 --ppl-source runs/tiny/data
      kamado eval MODEL --tasks arc-easy,jcommonsenseqa --backend lm-eval --limit 100
      kamado eval MODEL --tasks jcommonsenseqa,jnli,jsquad --prompts leaderboard
      kamado eval MODEL --tasks ja-leaderboard --prompts leaderboard --limit 0
    """
    import tempfile
    import time

    from pydantic import ValidationError

    from kamado import catalog
    from kamado.config import ConfigError, format_validation_error
    from kamado.eval.artifacts import EvalArtifact
    from kamado.recipe import apply_override
    from kamado.stage import run_stage_alone
    from kamado.ui import console, table

    data: dict[str, Any] = {}
    for ov in set_ or []:
        apply_override(data, ov)
    inputs: dict[str, Path] = {}
    if tokenizer is not None:
        inputs["tokenizer"] = tokenizer
    sources = None
    if ppl_source:
        sources = []
        for s in ppl_source:
            if Path(s).is_dir() and (Path(s) / "pack.json").is_file():
                inputs["data"] = Path(s).resolve()
                s = "pack"
            sources.append(s)
    short = [p.parent.name if p.name == "hf" and p.parent.name else p.name for p in models]
    entries = [f"{nick if short.count(nick) == 1 and nick else str(p)}={p.resolve()}" for p, nick in zip(models, short,
                                                                                                        strict=True)]
    given = {"tasks": tasks.split(",") if tasks else None, "fewshot": _parse_fewshot(fewshot) or None,
             "batch_size": batch_size, "ppl_sources": sources, "ppl_max_chars": ppl_max_chars, "dtype": dtype,
             "threads": threads, "backend": backend, "prompts": prompts}
    data |= {k: v for k, v in given.items() if v is not None} | {"models": entries}
    if limit is not None:
        data["limit"] = limit or None  # 0: every example
    try:
        cfg = EvalConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError("invalid eval settings\n" + format_validation_error(e, "eval")) from None
    for p in models:
        if not (p / "config.json").is_file():
            raise KamadoError(f"{p}: not a Hugging Face model folder (no config.json)")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kamado-eval-") as tmp:
        dest = out or Path(tmp)
        run_stage_alone("eval", cfg, dest, inputs, seed=seed, data_root=catalog.data_root(data_root))
        results = EvalArtifact.open(dest).models
    console.print(table(f"eval ({time.perf_counter() - t0:.1f}s)", ["model", "task", "metric", "value",
                                                                  "±stderr / 95% CI", "n"],
                        results_rows(results)))
    if out:
        console.print(f"results: {(out / 'results.json').resolve()}")


def judge(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for answers.jsonl, judgments.jsonl, scores.json "
                                      "(requests.jsonl with --dry-run).")],
    model_url: str | None = option(JudgeSettings, "model_url"),
    judge_url: str = option(JudgeSettings, "judge_url"),
    judge_model: str = option(JudgeSettings, "judge_model"),
    model: str | None = option(JudgeSettings, "model"),
    answers: Path | None = option(JudgeSettings, "answers_file", "--answers"),
    questions: str = option(JudgeSettings, "questions", "--questions", "--question-set"),
    judge_prompts: str = option(JudgeSettings, "judge_prompts"),
    dry_run: bool = option(JudgeSettings, "dry_run", "--dry-run"),
    samples: int = option(JudgeSettings, "samples", "--samples", "-k"),
    judge_temperature: float = option(JudgeSettings, "judge_temperature"),
    cache: Annotated[Path | None, typer.Option("--cache", help="Folder of cached judge replies, keyed on the "
                                               "whole request (default: $KAMADO_CACHE/judge, i.e. "
                                               "~/.cache/kamado/judge).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write cached replies.")] = False,
    api_key_env: str = option(JudgeSettings, "api_key_env"),
    model_api_key_env: str | None = option(JudgeSettings, "model_api_key_env"),
    turns: str = option(JudgeSettings, "turns", default=",".join(map(str, field_default(JudgeSettings, "turns")))),
    limit: int | None = option(JudgeSettings, "limit", "--limit", "-n"),
    max_tokens: int = option(JudgeSettings, "max_tokens"),
    concurrency: int = option(JudgeSettings, "concurrency"),
    retries: int = option(JudgeSettings, "retries"),
    timeout: float = option(JudgeSettings, "timeout"),
    data_root: DataRoot = None,
) -> None:
    """MT-Bench-style evaluation: answer two-turn questions with a model, grade each turn with a judge LLM.

    Both ends speak the OpenAI chat-completions protocol (e.g. `kamado serve` for the model). The judge
    requests are FastChat's: the MT-Bench single-answer judge prompts (Japanese ones for mt-bench-ja) with
    reference answers for math, reasoning and coding; it parses "[[rating]]". A judge reply that is no usable
    text is a failed judgment (counted in scores.json's parse_failure_share, asked again by the next run);
    scores.json is always written. Resumable; with the reply cache, judging unchanged answers again sends nothing.

    Examples:
      kamado serve runs/tiny/tune/full/hf --port 8000 &
      kamado judge --questions mt-bench-ja --model-url http://127.0.0.1:8000/v1 --model tiny-full \\
        --judge-url https://api.openai.com/v1 --judge-model gpt-4o --out runs/tiny/judge
      kamado judge --question-set mt-bench-ja-full --answers model_answer/m.jsonl --turns 1 --dry-run --out J
    """
    import os

    from rich.markup import escape

    from kamado import catalog
    from kamado.eval.judge import run_judge, score_table
    from kamado.ui import console, table

    try:
        turn_list = sorted({int(t) for t in turns.split(",") if t.strip()})
    except ValueError:
        raise KamadoError(f"--turns {turns!r}: expected 1, 2 or 1,2") from None
    if not turn_list or not set(turn_list) <= {1, 2}:
        raise KamadoError(f"--turns {turns!r}: expected 1, 2 or 1,2")
    if samples < 1:
        raise KamadoError(f"--samples {samples}: expected at least 1")
    if answers is not None and model_url is not None:
        raise KamadoError("--answers and --model-url: judge a file's answers or ask a model, not both")
    if answers is None and model_url is None and not dry_run:
        raise KamadoError("nothing to judge: pass --model-url (the model under test) or --answers FILE")
    root = catalog.data_root(data_root)
    base = Path(os.environ.get("KAMADO_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                               / "kamado"))
    s = JudgeSettings(questions=questions, model_url=model_url, model=model, judge_url=judge_url,
                      judge_model=judge_model, api_key_env=api_key_env, model_api_key_env=model_api_key_env,
                      turns=turn_list, limit=limit, max_tokens=max_tokens, concurrency=concurrency,
                      retries=retries, timeout=timeout, answers_file=answers, judge_prompts=judge_prompts,
                      samples=samples, judge_temperature=judge_temperature, dry_run=dry_run,
                      cache_dir=None if no_cache else (cache or base / "judge"))
    summary = run_judge(s, out, root, show_progress=True)
    if dry_run:
        console.print(f"{summary['requests']} judge request(s) of {escape(summary['model'])} written to "
                      f"{(out / 'requests.jsonl').resolve()} ({summary['cached']} already cached; "
                      f"{summary['to_send']} would be sent); nothing was sent")
        return
    cols, rows = score_table(summary)
    console.print(table(f"MT-Bench ({summary['model']} judged by {judge_model})", cols, rows))
    if summary.get("invalid"):
        console.print(escape(f"{summary['invalid']} of {summary['judged']} judgment(s) without a usable [[rating]] "
                             f"({summary['failed']} failed replies; share {summary['parse_failure_share']:.1%}; "
                             "excluded)"), style="yellow")
    if summary.get("ja_share") is not None and summary.get("lang") == "ja":
        console.print(f"answers written in Japanese: {summary['ja_share']:.1%} of their letters on average; "
                      f"{summary['answers_mostly_not_japanese']} of {summary['answers_with_text']} answer(s) "
                      "mostly not Japanese")
    if summary.get("cache"):
        console.print(f"judge reply cache: {summary['cache']['hits']} hit(s), {summary['cache']['misses']} sent")
    console.print(f"answers/judgments/scores: {out.resolve()}")
