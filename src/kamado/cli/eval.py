"""``kamado eval`` (benchmarks and perplexity on model folders) and ``kamado judge`` (MT-Bench-style)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kamado.config import KamadoError, parse_assignments

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
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="Comma list of tasks or suites: jcommonsenseqa, "
                                       "jnli, jsts, jsquad, arc-easy, arc-challenge, hellaswag, truthfulqa-mc, "
                                       "perplexity; suites jglue, en, mc, quick, all.")] = "quick",
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="Examples per task (default: all).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write results.json and details here.")] = None,
    fewshot: Annotated[list[str] | None, typer.Option("--fewshot", help="TASK=K demonstrations, repeatable.")] = None,
    batch_size: Annotated[int, typer.Option(help="Questions per forward pass.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the subset and few-shot sampling.")] = 1234,
    ppl_source: Annotated[list[str] | None, typer.Option("--ppl-source", help="Perplexity text: a data-root "
                          "name or file (default: jsquad-valid and wikitext2), or a pack folder.")] = None,
    ppl_max_tokens: Annotated[int, typer.Option(help="Perplexity tokens per source.")] = 20000,
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 where the CPU has native bf16), float32 or "
                                       "bfloat16.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: 1 for models under 50M "
                                                "parameters, else torch's choice).")] = None,
    tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer folder when the model folder has none.")] = None,
    backend: Annotated[str, typer.Option(help="native (kamado's scorer) or lm-eval (lm-evaluation-harness on "
                                         "the same prompts; arc-easy, arc-challenge, hellaswag, "
                                         "jcommonsenseqa).")] = "native",
    data_root: DataRoot = None,
) -> None:
    """Evaluate models on Japanese/English benchmarks (log-likelihood multiple choice, generation) and perplexity.

    Results carry standard errors; per-example predictions go to OUT/details/<model>/<task>.jsonl.

    Examples:
      kamado eval runs/tiny/pretrain/hf --tasks jcommonsenseqa,arc-easy,perplexity --limit 200 --out runs/ev
      kamado eval runs/tiny/tune/full/hf runs/tiny/tune/lora/hf --tasks jglue --limit 100
      kamado eval MODEL --tasks perplexity --ppl-source wikitext2 --ppl-source runs/tiny/data
      kamado eval MODEL --tasks arc-easy,jcommonsenseqa --backend lm-eval --limit 100
    """
    import os
    import time

    from kamado import registry
    from kamado.eval.harness import EvalSettings, cpu_threads, evaluate_model, load_model
    from kamado.eval.stage import _clean, safe_name
    from kamado.eval.tasks import expand
    from kamado.manifest import write_json_atomic
    from kamado.ui import console, progress, table

    if dtype not in ("auto", "float32", "bfloat16"):
        raise KamadoError(f"--dtype {dtype!r}: expected auto, float32 or bfloat16")
    if limit is not None and limit < 1:
        raise KamadoError("--limit must be at least 1")
    if backend not in ("native", "lm-eval"):
        raise KamadoError(f"--backend {backend!r}: expected native or lm-eval")
    names = expand(tasks)
    root = registry.data_root(data_root)
    sources = list(ppl_source or ["jsquad-valid", "wikitext2"])
    pack_dir = None
    for s in list(sources):
        if Path(s).is_dir() and (Path(s) / "pack.json").is_file():
            pack_dir = Path(s)
            sources[sources.index(s)] = "pack"
    settings = EvalSettings(limit=limit, batch_size=batch_size, seed=seed, fewshot=_parse_fewshot(fewshot),
                            ppl_sources=sources, ppl_max_tokens=ppl_max_tokens, pack_dir=pack_dir)
    results: dict[str, Any] = {}
    labels: dict[str, str] = {}
    t0 = time.perf_counter()
    short = [p.parent.name if p.name == "hf" and p.parent.name else p.name for p in models]
    for path, nick in zip(models, short, strict=True):
        label = nick if short.count(nick) == 1 and nick else str(path)
        if backend == "lm-eval":
            from kamado.eval.harness import resolve_dtype
            from kamado.eval.lmeval_backend import run_lm_eval

            work = out or Path(os.environ.get("HF_HOME", ".cache")) / "kamado-lm-eval"
            results[label] = _clean(run_lm_eval(path, names, root=root, limit=limit, fewshot=settings.fewshot,
                                                batch_size=batch_size, work_dir=work, dtype=resolve_dtype(dtype)))
            labels[label] = safe_name(label)
            continue
        model, tok = load_model(path, dtype=dtype, tokenizer_dir=tokenizer)

        def bar(task: str, total: int, _l: str = label) -> Any:
            return progress(f"{_l} {task}", total=total)

        detail = out / "details" / safe_name(label) if out else None
        with cpu_threads(model, threads):
            results[label] = _clean(evaluate_model(model, tok, names, settings, root=root, detail_dir=detail,
                                                   progress=bar))
        labels[label] = safe_name(label)
        del model
    if out:
        write_json_atomic(out / "results.json", {
            "models": results, "tasks": names,
            "settings": {"limit": limit, "seed": seed, "fewshot": settings.fewshot, "ppl_sources": sources,
                         "dtype": dtype, "backend": backend},
            "details": {k: f"details/{v}" for k, v in labels.items()}})
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
        console.print(f"[yellow]{summary['invalid']} judgment(s) without a parseable [[rating]] (excluded)[/]")
    console.print(f"answers/judgments/scores: {out.resolve()}")
