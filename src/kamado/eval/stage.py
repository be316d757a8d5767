"""The eval stage: every model of the run on every task; ``results.json`` plus per-example details."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.eval.config import EvalConfig
from kamado.stage import StageContext

# run model name -> (upstream stage, HF folder inside it)
MODEL_DIRS = {"pretrain": ("pretrain", "hf"), "tune/full": ("tune", "full/hf"), "tune/lora": ("tune", "lora/hf")}
# the metrics that go into the manifest counts (the full set is in results.json)
MAIN_METRICS = ("acc", "acc_norm", "mc1", "mc2", "pearson", "spearman", "exact_match", "char_f1",
                "token_ppl_ja", "token_ppl_en", "char_ppl_ja", "char_ppl_en", "bpc_ja", "bpc_en", "token_ppl")


def safe_name(name: str) -> str:
    """A model name usable as a folder name (``tune/full`` -> ``tune-full``)."""
    return name.replace("/", "-").replace("\\", "-").strip(".-") or "model"


def model_path(name: str, ctx: StageContext) -> Path | None:
    """The HF folder of a run model name (or a path relative to the run folder); None when absent."""
    if name in MODEL_DIRS:
        stage, sub = MODEL_DIRS[name]
        base = ctx.inputs.get(stage)
        p = base / sub if base is not None else None
    else:
        p = Path(name)
        if not p.is_absolute() and ctx.run_dir is not None:
            p = ctx.run_dir / p
    return p if p is not None and (p / "config.json").is_file() else None


def _clean(x: Any) -> Any:
    """NaN/inf become None so results.json is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def run(cfg: EvalConfig, ctx: StageContext) -> dict[str, Any]:
    """Evaluate each model of ``cfg.models`` that exists; write ``results.json``; return flat counts."""
    from kamado.eval.harness import EvalSettings, cpu_threads, evaluate_model, load_model
    from kamado.eval.tasks import expand
    from kamado.manifest import write_json_atomic
    from kamado.ui import progress

    tasks = expand(cfg.tasks)
    settings = EvalSettings(limit=cfg.limit, batch_size=cfg.batch_size, seed=ctx.seed, fewshot=dict(cfg.fewshot),
                            ppl_sources=list(cfg.ppl_sources), ppl_max_tokens=cfg.ppl_max_tokens,
                            ppl_window=cfg.ppl_window, max_new_tokens=cfg.max_new_tokens,
                            pack_dir=ctx.inputs.get("data"))
    found = {n: model_path(n, ctx) for n in cfg.models}
    todo = {n: p for n, p in found.items() if p is not None}
    if not todo:
        raise KamadoError(f"eval: none of the models {cfg.models} exists in this run (expected e.g. "
                          "pretrain/hf, tune/full/hf)")
    results: dict[str, Any] = {}
    for name, path in todo.items():
        part = ctx.out / "models" / safe_name(name) / "results.json"
        if part.is_file():  # a finished model of an interrupted attempt (same fingerprint): reuse it
            prev = json.loads(part.read_text(encoding="utf-8"))
            if prev.get("tasks") == tasks:
                results[name] = prev["results"]
                continue
        model, tok = load_model(path, dtype=cfg.dtype, tokenizer_dir=ctx.inputs.get("tokenizer"))

        def bar(task: str, total: int, _n: str = name) -> Any:
            return progress(f"eval {_n} {task}", total=total)

        with cpu_threads(model, cfg.threads):
            res = evaluate_model(model, tok, tasks, settings, root=ctx.data_root,
                                 detail_dir=ctx.out / "details" / safe_name(name),
                                 progress=None if ctx.quiet else bar)
        results[name] = _clean(res)
        write_json_atomic(part, {"tasks": tasks, "results": results[name]})
        del model
    write_json_atomic(ctx.out / "results.json", {
        "models": results, "tasks": tasks, "skipped_models": [n for n, p in found.items() if p is None],
        "settings": {"limit": cfg.limit, "seed": ctx.seed, "fewshot": cfg.fewshot, "ppl_sources": cfg.ppl_sources,
                     "dtype": cfg.dtype, "batch_size": cfg.batch_size},
        "details": {n: f"details/{safe_name(n)}" for n in results},
    })
    counts: dict[str, Any] = {"models": len(results), "tasks": len(tasks)}
    for name, per in results.items():
        for task, mets in per.items():
            for k in MAIN_METRICS:
                if mets.get(k) is not None:
                    counts[f"{name}.{task}.{k}"] = round(float(mets[k]), 6)
    return counts
