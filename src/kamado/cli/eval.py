"""``kamado eval`` (benchmarks and perplexity on model folders) and ``kamado judge`` (MT-Bench-style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kamado.config import KamadoError, parse_assignments
from kamado.stage import DEFAULT_SEED

DataRoot = Annotated[Path | None, typer.Option("--data-root", help="Folder of the shared data sets "
                                               "(default: $KAMADO_DATA_ROOT, else ../shared/data).")]


def _parse_fewshot(items: list[str] | None) -> dict[str, int]:
    return parse_assignments(items, "--fewshot", int, "jcommonsenseqa=3")


def main_metric(task: str, m: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The headline metrics of a task result: (name, value, stderr)."""
    keys = {"perplexity": ["char_ppl_ja", "char_ppl_en", "token_ppl_ja", "token_ppl_en", "bpc"],
            "jsts": ["pearson", "spearman"], "jsquad": ["exact_match", "char_f1"],
            "truthfulqa-mc": ["mc1", "mc2"]}.get(task, ["acc", "acc_norm"])
    return [(k, m[k], m.get(f"{k}_stderr")) for k in keys if m.get(k) is not None]


def results_rows(results: dict[str, dict[str, dict[str, Any]]]) -> list[list[Any]]:
    """Table rows (model, task, metric, value, ±stderr, n) for a results mapping."""
    rows = []
    for model, per in results.items():
        for task, m in per.items():
            for k, v, se in main_metric(task, m):
                rows.append([model, task, k, float(v), "" if se is None else f"±{se:.3g}", m.get("n", "")])
    return rows


def evaluate(
    models: Annotated[list[Path], typer.Argument(help="Hugging Face model folders (config.json + tokenizer).")],
    tasks: Annotated[str | None, typer.Option("--tasks", "-t", help="Comma list of tasks or suites: jcommonsenseqa, "
                                              "jnli, jsts, jsquad, arc-easy, arc-challenge, hellaswag, truthfulqa-mc, "
                                              "perplexity; suites jglue, en, mc, quick, all (default: eval.tasks).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="Examples per task (default: eval.limit; "
                                              "0: all).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write results.json, details and manifest.json "
                                             "here (default: a temporary folder).")] = None,
    fewshot: Annotated[list[str] | None, typer.Option("--fewshot", help="TASK=K demonstrations, repeatable.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Questions per forward pass (default: eval.batch_size).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset and few-shot sampling.")] = DEFAULT_SEED,
    ppl_source: Annotated[list[str] | None, typer.Option("--ppl-source", help="Perplexity text: a data-root "
                          "name or file, or a pack folder (default: eval.ppl_sources).")] = None,
    ppl_max_tokens: Annotated[int | None, typer.Option(help="Perplexity tokens per source.")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto (bfloat16 where the CPU has native bf16), float32 or "
                                              "bfloat16.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: 1 for models under 50M "
                                                "parameters, else torch's choice).")] = None,
    tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer folder when the model folder has none.")] = None,
    backend: Annotated[str | None, typer.Option(help="native (kamado's scorer) or lm-eval (lm-evaluation-harness on "
                                                "the same prompts; arc-easy, arc-challenge, hellaswag, "
                                                "jcommonsenseqa).")] = None,
    prompts: Annotated[str | None, typer.Option("--prompts", help="kamado (kamado's Japanese prompts) or "
                                                "leaderboard (lm-eval's japanese_leaderboard prompts for "
                                                "jcommonsenseqa, jnli, jsquad).")] = None,
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
    """
    import tempfile
    import time

    from pydantic import ValidationError

    from kamado import registry
    from kamado.config import ConfigError, format_validation_error
    from kamado.eval.artifacts import EvalArtifact
    from kamado.eval.config import EvalConfig
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
             "batch_size": batch_size, "ppl_sources": sources, "ppl_max_tokens": ppl_max_tokens, "dtype": dtype,
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
        run_stage_alone("eval", cfg, dest, inputs, seed=seed, data_root=registry.data_root(data_root))
        results = EvalArtifact.open(dest).models
    console.print(table(f"eval ({time.perf_counter() - t0:.1f}s)", ["model", "task", "metric", "value", "stderr", "n"],
                        results_rows(results)))
    if out:
        console.print(f"results: {(out / 'results.json').resolve()}")


def judge(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for answers.jsonl, judgments.jsonl, scores.json.")],
    model_url: Annotated[str, typer.Option("--model-url", help="OpenAI-compatible base URL of the model under "
                                           "test, e.g. http://127.0.0.1:8000/v1.")],
    judge_url: Annotated[str, typer.Option("--judge-url", help="OpenAI-compatible base URL of the judge.")],
    judge_model: Annotated[str, typer.Option("--judge-model", help="Judge model name, e.g. gpt-4o.")],
    model: Annotated[str | None, typer.Option("--model", help="Model name at --model-url (default: the "
                                              "first of its /v1/models).")] = None,
    questions: Annotated[str, typer.Option("--questions", help="mt-bench-ja (60), mt-bench-ja-full (80), "
                                           "mt-bench-en, or a JSONL file.")] = "mt-bench-ja",
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="Environment variable holding the judge's "
                                             "API key.")] = "OPENAI_API_KEY",
    model_api_key_env: Annotated[str | None, typer.Option(help="Environment variable with the model "
                                                          "endpoint's key, if it needs one.")] = None,
    turns: Annotated[str, typer.Option(help="Turns to judge: 1, 2 or 1,2.")] = "1,2",
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="First N questions only.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Answer length limit (tokens).")] = 1024,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 4,
    retries: Annotated[int, typer.Option(help="Retries per request (exponential backoff).")] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request.")] = 300.0,
    data_root: DataRoot = None,
) -> None:
    """MT-Bench-style evaluation: answer two-turn questions with a model, grade each turn with a judge LLM.

    Both ends speak the OpenAI chat-completions protocol (e.g. `kamado serve` for the model). Uses the
    MT-Bench single-answer judge prompts (Japanese ones for mt-bench-ja) with reference answers for math,
    reasoning and coding; parses "[[rating]]"; resumable: finished answers and judgments are skipped.

    Examples:
      kamado serve runs/tiny/tune/full/hf --port 8000 &
      kamado judge --questions mt-bench-ja --model-url http://127.0.0.1:8000/v1 --model tiny-full \\
        --judge-url https://api.openai.com/v1 --judge-model gpt-4o --out runs/tiny/judge
    """
    from rich.markup import escape

    from kamado import registry
    from kamado.eval.judge import JudgeSettings, run_judge, score_table
    from kamado.ui import console, table

    try:
        turn_list = sorted({int(t) for t in turns.split(",") if t.strip()})
    except ValueError:
        raise KamadoError(f"--turns {turns!r}: expected 1, 2 or 1,2") from None
    if not turn_list or not set(turn_list) <= {1, 2}:
        raise KamadoError(f"--turns {turns!r}: expected 1, 2 or 1,2")
    root = registry.data_root(data_root)
    s = JudgeSettings(questions=questions, model_url=model_url, model=model, judge_url=judge_url,
                      judge_model=judge_model, api_key_env=api_key_env, model_api_key_env=model_api_key_env,
                      turns=turn_list, limit=limit, max_tokens=max_tokens, concurrency=concurrency,
                      retries=retries, timeout=timeout)
    summary = run_judge(s, out, root, show_progress=True)
    cols, rows = score_table(summary)
    console.print(table(f"MT-Bench ({summary['model']} judged by {judge_model})", cols, rows))
    if summary.get("invalid"):
        console.print(f"[yellow]{summary['invalid']} judgment(s) without a parseable {escape('[[rating]]')} "
                      "(excluded)[/]")
    console.print(f"answers/judgments/scores: {out.resolve()}")
