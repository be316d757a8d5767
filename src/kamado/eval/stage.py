"""The eval stage: every model of the run on every task; ``results.json`` plus per-example details.

``kamado eval MODEL...`` runs this same stage (each model given as ``LABEL=PATH``), so a model evaluated
alone and inside a recipe gets the same numbers for the same config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.eval.artifacts import MAIN_METRICS, EvalArtifact, safe_name
from kamado.eval.config import EvalConfig
from kamado.jsonl import to_json_safe
from kamado.stage import StageContext

__all__ = ["MAIN_METRICS", "model_path", "run", "safe_name", "split_model"]


def split_model(entry: str) -> tuple[str, str]:
    """``LABEL=PATH`` -> (label, path); a run model name or a plain path is its own label."""
    if "=" in entry and not Path(entry).exists():
        for i, c in enumerate(entry):  # a path may itself hold "=" (and commas): prefer a split naming a folder
            if c == "=" and i and Path(entry[i + 1:]).expanduser().is_dir():
                return entry[:i], entry[i + 1:]
        label, _, ref = entry.partition("=")
        if label and ref:
            return label, ref
    return entry, entry


def _model_key(path: Path) -> list:
    """What identifies a model folder's content (the SHA-256 of each of its files, never sizes and times): a
    reused result of an earlier attempt must be of the same model."""
    from kamado.manifest import digest_files

    p = Path(path)
    return sorted([k, v] for k, v in digest_files([f for f in p.iterdir() if f.is_file()], p).items()) \
        if p.is_dir() else []


def model_path(name: str, ctx: StageContext) -> Path | None:
    """The HF folder of a run model (``pretrain``, ``tune/full``, ``tune/lora``, read through the upstream
    stages' artifact readers) or of a path (relative to the run folder); None when absent."""
    _, ref = split_model(name)
    p: Path | None
    if ref == "pretrain" or ref.startswith("tune/"):
        stage = "pretrain" if ref == "pretrain" else "tune"
        if stage not in ctx.inputs:
            return None
        try:
            art = ctx.artifact(stage)
        except KamadoError:
            return None
        p = art.hf_dir if stage == "pretrain" else art.hf_dir(ref.split("/", 1)[1])
    else:
        p = Path(ref).expanduser()
        if not p.is_absolute() and ctx.run_dir is not None:
            p = ctx.run_dir / p
    return p if p is not None and (p / "config.json").is_file() else None


def _evaluate(name: str, path: Path, tasks: list[str], cfg: EvalConfig, settings: Any, ctx: StageContext) -> dict:
    from kamado.eval.harness import cpu_threads, evaluate_model, load_model, resolve_dtype
    from kamado.ui import progress

    if cfg.backend == "lm-eval":
        from kamado.eval.lmeval_backend import run_lm_eval

        return run_lm_eval(path, tasks, root=ctx.data_root, limit=cfg.limit, fewshot=dict(cfg.fewshot),
                           batch_size=cfg.batch_size,
                           work_dir=ctx.cache_dir or Path(os.environ.get("HF_HOME", ".cache")) / "kamado-lm-eval",
                           dtype=resolve_dtype(cfg.dtype), prompts=cfg.prompts)
    model, tok = load_model(path, dtype=cfg.dtype, tokenizer_dir=ctx.inputs.get("tokenizer"))

    def bar(task: str, total: int) -> Any:
        return progress(f"eval {name} {task}", total=total)

    with cpu_threads(model, cfg.threads):
        res = evaluate_model(model, tok, tasks, settings, root=ctx.data_root,
                             detail_dir=ctx.out / "details" / safe_name(name), progress=None if ctx.quiet else bar,
                             model_dir=path)
    del model
    return res


def run(cfg: EvalConfig, ctx: StageContext) -> dict[str, Any]:
    """Evaluate each model of ``cfg.models`` that exists; write ``results.json``; return flat counts."""
    from kamado.eval.harness import EvalSettings
    from kamado.eval.tasks import expand
    from kamado.manifest import write_json_atomic

    tasks = expand(cfg.tasks)
    pack_dir = None
    if "pack" in cfg.ppl_sources and "data" in ctx.inputs:
        pack_dir = ctx.artifact("data").path
    settings = EvalSettings(limit=cfg.limit, batch_size=cfg.batch_size, seed=ctx.seed, fewshot=dict(cfg.fewshot),
                            ppl_sources=list(cfg.ppl_sources), ppl_max_chars=cfg.ppl_max_chars,
                            ppl_window=cfg.ppl_window, max_new_tokens=cfg.max_new_tokens, pack_dir=pack_dir,
                            prompts=cfg.prompts, ppl_normal_form=cfg.ppl_normal_form,
                            instruct_generate=cfg.instruct_generate)
    found = {split_model(n)[0]: model_path(n, ctx) for n in cfg.models}
    todo = {n: p for n, p in found.items() if p is not None}
    if not todo:
        raise KamadoError(f"eval: none of the models {cfg.models} exists in this run (expected e.g. "
                          "pretrain/hf, tune/full/hf)")
    results: dict[str, Any] = {}
    for name, path in todo.items():
        part = ctx.out / "models" / safe_name(name) / "results.json"
        if part.is_file():  # a finished model of an interrupted attempt (same fingerprint): reuse it
            prev = json.loads(part.read_text(encoding="utf-8"))
            if prev.get("tasks") == tasks and prev.get("model") == _model_key(path):
                results[name] = prev["results"]
                continue
        results[name] = to_json_safe(_evaluate(name, path, tasks, cfg, settings, ctx), nonfinite="null")
        write_json_atomic(part, {"tasks": tasks, "results": results[name], "model": _model_key(path)})
    art = EvalArtifact(ctx.out, results, tasks, [n for n, p in found.items() if p is None],
                       {"limit": cfg.limit, "seed": ctx.seed, "fewshot": cfg.fewshot, "ppl_sources": cfg.ppl_sources,
                        "ppl_max_chars": cfg.ppl_max_chars,
                        "dtype": cfg.dtype, "batch_size": cfg.batch_size, "backend": cfg.backend,
                        "prompts": cfg.prompts,
                        "models": {n: str(p) for n, p in todo.items()}})
    art.write()
    return art.to_counts()
