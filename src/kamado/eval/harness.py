"""Evaluate one model on a list of tasks: scoring, metrics with standard errors, per-example details."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.eval import metrics as M
from kamado.eval.tasks import Example, build_examples, get_task


@dataclass
class EvalSettings:
    """What the harness needs besides the model (a subset of EvalConfig, shared by the CLI and the stage)."""

    limit: int | None = 200
    batch_size: int = 16
    seed: int = 1234
    fewshot: dict[str, int] = field(default_factory=dict)
    ppl_sources: list[str] = field(default_factory=lambda: ["pack"])
    ppl_max_chars: int = 500_000  # per source, chosen from the text alone (kamado.eval.perplexity.select)
    ppl_window: int = 512
    ppl_normal_form: str = "identity"
    instruct_generate: bool = True  # instruct tasks: greedy answers scored too (else the answer loss alone)  # the perplexity text's normal form (kamado.tokenizer.normal.FORMS)
    max_new_tokens: int = 32
    pack_dir: Path | None = None  # resolves the "pack" perplexity source
    prompts: str = "kamado"  # prompt set: kamado | leaderboard (lm-eval's japanese_leaderboard tasks)


def resolve_dtype(dtype: str) -> str:
    """``auto``: bfloat16 where the CPU computes it natively (AMX / AVX512-BF16) or on CUDA, else float32."""
    if dtype != "auto":
        return dtype
    import torch

    if torch.cuda.is_available():
        return "bfloat16"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    if native:
        try:
            flags = Path("/proc/cpuinfo").read_text()
            native = "amx_bf16" in flags or "avx512_bf16" in flags
        except OSError:
            pass
    return "bfloat16" if native else "float32"


@contextmanager
def cpu_threads(model: Any, requested: int | None) -> Iterator[int]:
    """Torch CPU threads while evaluating ``model``: ``requested``, else 1 for models under 50M parameters.

    Small models run many small ops; a second OpenMP thread gains little and, on a busy machine, costs
    several times the work (measured 8x slower for the tiny recipe's eval at load 5 on 2 cores).
    """
    import torch

    before = torch.get_num_threads()
    n = requested or (1 if sum(p.numel() for p in model.parameters()) < 50_000_000 else before)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def load_model(path: Path, *, dtype: str = "float32", tokenizer_dir: Path | None = None) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a Hugging Face folder (offline); ``dtype`` may be ``auto``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from kamado.model.integrity import check_model_folder, check_tokenizer_fits

    path = Path(path)
    cfg = check_model_folder(path)  # config.json readable, weights present and complete
    tok_dir = path if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model",
                                                          "tokenizer_config.json")) else tokenizer_dir
    if tok_dir is None:
        raise KamadoError(f"{path}: no tokenizer files; pass the tokenizer folder")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    check_tokenizer_fits(cfg, tok, path, tok_dir)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, resolve_dtype(dtype)))
    model.eval()
    return model, tok


def _mc_metrics(exs: list[Example], scores: list[list[Any]]) -> tuple[dict[str, Any], list[dict]]:
    accs, norms, details = [], [], []
    for ex, sc in zip(exs, scores, strict=True):
        ll = [s.loglik for s in sc]
        # lm-eval normalises by the choice's length in characters without the target delimiter
        dl = ex.extra.get("delimiter", " ")
        lln = [s.loglik / max(1, len(c[len(dl):] if dl and c.startswith(dl) else c))
               for s, c in zip(sc, ex.choices, strict=True)]
        pred, pred_n = M.argmax(ll), M.argmax(lln)
        accs.append(float(pred == ex.gold))
        norms.append(float(pred_n == ex.gold))
        details.append({"id": ex.id, "query": ex.query, "choices": ex.choices, "gold": ex.gold, "pred": pred,
                        "pred_norm": pred_n, "logliks": [round(x, 4) for x in ll],
                        "correct": pred == ex.gold, "correct_norm": pred_n == ex.gold})
    acc, se = M.mean_stderr(accs)
    accn, sen = M.mean_stderr(norms)
    return {"acc": acc, "acc_stderr": se, "acc_norm": accn, "acc_norm_stderr": sen, "n": len(exs)}, details


def _tqa_metrics(exs: list[Example], scores: list[list[Any]]) -> tuple[dict[str, Any], list[dict]]:
    mc1s, mc2s, details = [], [], []
    for ex, sc in zip(exs, scores, strict=True):
        ll = [s.loglik for s in sc]
        n1 = ex.gold["mc1_n"]
        pred = M.argmax(ll[:n1])
        mc1s.append(float(pred == ex.gold["mc1"]))
        mc2s.append(M.mc2(ll[n1:], ex.gold["mc2_true"]))
        details.append({"id": ex.id, "query": ex.query, "mc1_pred": pred, "mc1_correct": pred == ex.gold["mc1"],
                        "mc2": round(mc2s[-1], 6), "logliks": [round(x, 4) for x in ll]})
    m1, s1 = M.mean_stderr(mc1s)
    m2, s2 = M.mean_stderr(mc2s)
    return {"mc1": m1, "mc1_stderr": s1, "mc2": m2, "mc2_stderr": s2, "n": len(exs)}, details


def _regression_metrics(exs: list[Example], scores: list[list[Any]]) -> tuple[dict[str, Any], list[dict]]:
    preds, golds, details = [], [], []
    for ex, sc in zip(exs, scores, strict=True):
        ll = [s.loglik for s in sc]
        mx = max(ll)
        p = [math.exp(x - mx) for x in ll]
        z = sum(p)
        pred = sum(float(c) * q / z for c, q in zip(ex.choices, p, strict=True))
        preds.append(pred)
        golds.append(float(ex.gold))
        details.append({"id": ex.id, "query": ex.query, "gold": ex.gold, "pred": round(pred, 4),
                        "logliks": [round(x, 4) for x in ll]})
    r, rho = M.pearson(preds, golds), M.spearman(preds, golds)
    return {"pearson": r, "pearson_stderr": M.corr_stderr(r, len(exs)), "spearman": rho,
            "spearman_stderr": M.corr_stderr(rho, len(exs)), "n": len(exs)}, details


def _run_examples(model: Any, tokenizer: Any, task: Any, exs: list[Example], s: EvalSettings,
                  adv: Callable[[int], Any] | None) -> tuple[dict[str, Any], list[dict]]:
    from kamado.eval.generate import generate
    from kamado.eval.scorer import score_choices

    if task.kind == "generation":
        gens = []
        for b0 in range(0, len(exs), s.batch_size):
            chunk = exs[b0:b0 + s.batch_size]
            gens += generate(model, tokenizer, [e.context for e in chunk],
                             max_new_tokens=task.max_new_tokens or s.max_new_tokens, stop=task.stop,
                             batch_size=s.batch_size)
            if adv:
                adv(len(chunk))
        if task.score is not None:
            return _scored_generation(task, exs, [g.text for g in gens])
        match = M.exact_match_strict if task.strict_em else M.exact_match
        em = [match(g.text, e.gold) for g, e in zip(gens, exs, strict=True)]
        f1 = [M.char_f1(g.text, e.gold) for g, e in zip(gens, exs, strict=True)]
        m_em, se_em = M.mean_stderr(em)
        m_f1, se_f1 = M.mean_stderr(f1)
        res = {"exact_match": m_em, "exact_match_stderr": se_em, "char_f1": m_f1,
               "char_f1_stderr": se_f1, "n": len(exs)}
        details = [{"id": e.id, "query": e.query[-300:], "answers": e.gold, "pred": g.text, "em": a,
                    "f1": round(b, 4)} for e, g, a, b in zip(exs, gens, em, f1, strict=True)]
    else:
        scores = score_choices(model, tokenizer, [(e.context, e.choices) for e in exs],
                               batch_size=s.batch_size, progress=adv)
        if task.kind == "truthfulqa":
            res, details = _tqa_metrics(exs, scores)
        elif task.kind == "regression":
            res, details = _regression_metrics(exs, scores)
        else:
            res, details = _mc_metrics(exs, scores)
    if task.metrics:  # the task's own metrics only (e.g. lm-eval's xwinograd reports acc, not acc_norm)
        res = {k: v for k, v in res.items() if k == "n" or k.removesuffix("_stderr") in task.metrics}
    return res, details


def _scored_generation(task: Any, exs: list[Example], preds: list[str]) -> tuple[dict[str, Any], list[dict]]:
    """Metrics and details of a generation task with its own per-item ``score(completion, gold)``."""
    per = [task.score(p, e.gold) for p, e in zip(preds, exs, strict=True)]
    res: dict[str, Any] = {}
    for m in task.metrics:
        res[m], res[f"{m}_stderr"] = M.mean_stderr([float(x[m]) for x in per])
    res["n"] = len(exs)
    details = [{"id": e.id, "query": e.query[-300:], "gold": e.gold, "pred": p,
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in x.items()}}
               for e, p, x in zip(exs, preds, per, strict=True)]
    return res, details


@contextmanager
def _bar(progress: Callable[..., Any] | None, name: str, total: int) -> Iterator[Any]:
    if progress is None:
        yield None
    else:
        with progress(name, total) as adv:
            yield adv


def evaluate_model(model: Any, tokenizer: Any, tasks: list[str], s: EvalSettings, *, root: Path | None = None,
                   detail_dir: Path | None = None, progress: Callable[..., Any] | None = None,
                   model_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Run ``tasks`` on one model; returns ``{task: {metric: value, "n": N, "seconds": s}}``.

    ``progress(description, total)`` is a context manager yielding ``advance(n)`` (``kamado.ui.progress``).
    Per-example details go to ``detail_dir/<task>.jsonl`` when given. ``model_dir``: the model's folder,
    where perplexity finds its unigram floor.
    """
    from kamado.eval.perplexity import build_docs, evaluate_perplexity, load_unigram

    results: dict[str, dict[str, Any]] = {}
    for name in tasks:
        task = get_task(name, s.prompts)
        t0 = time.perf_counter()
        if task.kind == "perplexity":
            docs = build_docs(s.ppl_sources, tokenizer, root, max_chars=s.ppl_max_chars, seed=s.seed,
                              pack_dir=s.pack_dir, normal_form=s.ppl_normal_form)
            with _bar(progress, name, len(docs)) as adv:
                res, details = evaluate_perplexity(model, tokenizer, docs, window=s.ppl_window,
                                                   batch_size=max(1, s.batch_size // 2), progress=adv,
                                                   unigram=load_unigram(model_dir), seed=s.seed)
        elif task.kind == "instruct":  # the references' answer loss, greedy answers vs the references
            from kamado.eval.instruct import evaluate_instruct, instruct_items

            items = instruct_items(task, root, limit=s.limit, seed=s.seed)
            passes = 2 if s.instruct_generate else 1
            with _bar(progress, name, passes * len(items)) as adv:  # the answer loss, then generation
                res, details = evaluate_instruct(model, tokenizer, items, max_new_tokens=s.max_new_tokens,
                                                 batch_size=s.batch_size, progress=adv,
                                                 generate_answers=s.instruct_generate)
        else:
            exs, total = build_examples(task, root, limit=s.limit, seed=s.seed, shots=s.fewshot.get(name))
            with _bar(progress, name, len(exs)) as adv:
                res, details = _run_examples(model, tokenizer, task, exs, s, adv)
            res["n_total"] = total
            res["shots"] = s.fewshot.get(name, task.shots)
        res["seconds"] = round(time.perf_counter() - t0, 3)
        results[name] = res
        if detail_dir is not None:
            detail_dir.mkdir(parents=True, exist_ok=True)
            with open(detail_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
                for d in details:
                    f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return results
