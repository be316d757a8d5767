"""The tune stage: full fine-tuning and LoRA on the same instruction data, compared side by side.

Reads the pretrain stage's ``hf/`` folder (or ``cfg.base``), writes per method ``<method>/metrics.jsonl``
and checkpoints (through the one trainer, :class:`kamado.train.trainer.Trainer`), ``full/hf/``,
``lora/adapter/`` and ``lora/hf/`` (merged), and ``tune.json`` with the comparison.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from kamado import catalog, folders
from kamado.config import KamadoError
from kamado.jsonl import read_records
from kamado.manifest import write_json_atomic
from kamado.stage import StageContext
from kamado.tune.config import TuneConfig
from kamado.ui import console

RESULT = "result.json"


def base_dir(cfg: TuneConfig, ctx: StageContext) -> Path:
    """The HF model folder to tune: ``cfg.base`` if set, else the pretrain stage's ``hf/``."""
    base = Path(cfg.base).expanduser() if cfg.base else ctx.artifact("pretrain").hf_dir
    if not (base / "config.json").is_file():
        raise KamadoError(f"{base}: not a Hugging Face model folder (no config.json)")
    return base


def load_tokenizer(base: Path, fallback: Path | None = None) -> Any:
    """The base model's tokenizer (or ``fallback``'s when the model folder has none), with the chat template."""
    from transformers import AutoTokenizer

    from kamado.tune.templates import set_chat_template

    src = base if (base / "tokenizer_config.json").is_file() or fallback is None else fallback
    return set_chat_template(AutoTokenizer.from_pretrained(str(src)))


def _summarise_metrics(recs: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [r for r in recs if "loss" in r and "val_loss" not in r]
    tail = [r["loss"] for r in steps[-10:] if isinstance(r.get("loss"), int | float)]
    tps = [r["tokens_per_s"] for r in steps[1:] if isinstance(r.get("tokens_per_s"), int | float)]
    vals = [r for r in recs if "val_loss" in r]
    return {
        "steps_logged": len(steps),
        "final_train_loss": round(statistics.mean(tail), 4) if tail else None,
        "tokens_per_s": round(statistics.median(tps), 1) if tps else None,
        "last_val_loss_engine": vals[-1]["val_loss"] if vals else None,
    }


def _train_config(cfg: TuneConfig, method: str) -> Any:
    tcfg = cfg.train
    if method == "lora":
        opt = tcfg.optimizer
        scale = cfg.lora_lr / opt.lr if opt.lr else 1.0
        tcfg = tcfg.model_copy(update={"optimizer": opt.model_copy(update={"lr": cfg.lora_lr,
                                                                            "min_lr": opt.min_lr * scale})})
    return tcfg


def _fresh_model(method: str, cfg: TuneConfig, base: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from kamado.tune import lora as lora_mod

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model.config.use_cache = False
    return lora_mod.wrap(model, cfg.lora) if method == "lora" else model


def restore_fp32(method: str, cfg: TuneConfig, base: Path, ck_root: Path) -> Any:
    """The trained model in fp32 from the final checkpoint (fp32 master weights of what was trained).

    The trainer may train in bf16 (frozen weights rounded to bf16 too); rebuilding from the fp32 base and
    the checkpoint's trained tensors keeps LoRA's frozen base weights exactly as they were.
    """
    import torch

    from kamado.train import checkpoint as ckpt

    last = ckpt.latest(ck_root)
    if last is None:
        raise KamadoError(f"{ck_root}: training left no checkpoint")
    msd, _, _ = ckpt.load(last)
    model = _fresh_model(method, cfg, base)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                if n not in msd:
                    raise KamadoError(f"{last}: checkpoint lacks the trained parameter {n}")
                p.copy_(msd[n].to(torch.float32))
    return model


def inherit_unigram_floor(base: Path, hf: Path) -> list[str]:
    """Copy the base model's unigram floor (``kamado_unigram.npy`` and ``.json``, :mod:`kamado.data.unigram`) into
    a tuned model's export, so perplexity reports ``unigram_bpc`` for it too: the floor is a property of the
    pretraining text, which the tuned model inherits. Returns the names copied (none when the base has none)."""
    from kamado.data.unigram import UNIGRAM

    names = [UNIGRAM, UNIGRAM.removesuffix(".npy") + ".json"]
    copied = [n for n in names if (base / n).is_file()]
    for n in copied:
        shutil.copyfile(base / n, hf / n)
    return copied


def tune_one(method: str, cfg: TuneConfig, ctx: StageContext, base: Path, tokenizer: Any, data: Any) -> dict:
    """Train one method into ``ctx.out/<method>`` (resuming), export it, and return its summary."""

    import torch

    from kamado.train.export import export_hf
    from kamado.train.guard import run_guarded
    from kamado.train.trainer import Trainer
    from kamado.tune import lora as lora_mod
    from kamado.tune.sft import SFTBatches, evaluate_loss, pack, valid_batches

    mdir = ctx.out / method
    done = mdir / RESULT
    if done.is_file():  # finished in an earlier attempt of this same config
        console.print(f"[green]✓[/] tune/{method}: already done")
        return json.loads(done.read_text(encoding="utf-8"))
    mdir.mkdir(parents=True, exist_ok=True)
    seed = cfg.train.seed if cfg.train.seed is not None else ctx.seed
    tcfg = _train_config(cfg, method)
    if tcfg.seed is None:
        tcfg = tcfg.model_copy(update={"seed": seed})
    if tcfg.nproc > 1:
        raise KamadoError("tune.train.nproc > 1: instruction tuning runs in one process (set nproc: 1)")
    micro = max(1, tcfg.batch_size // max(1, tcfg.grad_accum))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    valid = valid_batches(data.valid[: cfg.max_valid_examples], micro, pad_id)
    rows = pack(data.train, tcfg.seq_len, cfg.packing, seed)
    first: dict[str, Any] = {}  # the first attempt's parameter counts and validation loss before training

    def make_trainer(callbacks: list[Any]) -> Trainer:
        """A fresh model and batch source (after a hang restart too; the trainer resumes), built under the guard
        so that its startup timeout covers loading the base model."""
        torch.manual_seed(seed)
        m = _fresh_model(method, cfg, base)
        if not first:
            trainable, total = lora_mod.param_counts(m)
            first.update(trainable=trainable, total=total, val_before=evaluate_loss(m, valid) if valid else None)
            console.print(f"tune/{method}: {trainable:,} of {total:,} parameters trainable "
                          f"({100 * trainable / total:.2f}%), {len(rows):,} rows, lr {tcfg.optimizer.lr:g}")
        return Trainer(m, SFTBatches(rows, micro, pad_id, seed), tcfg, mdir, valid=valid or None,
                       trainable=lora_mod.trainable_names(m) if method == "lora" else None,
                       description=f"tune/{method}", quiet=ctx.quiet or None, callbacks=callbacks)

    result = run_guarded(make_trainer, cfg.guard, cfg.alerts, mdir,
                         run=f"{ctx.run_dir.name if ctx.run_dir else ''}/tune/{method}")
    trainable, total, val_before = first["trainable"], first["total"], first["val_before"]
    model = restore_fp32(method, cfg, base, mdir / "checkpoints").eval()
    val_after = evaluate_loss(model, valid) if valid else None
    out: dict[str, Any] = {"method": method, "trainable_params": trainable, "total_params": total,
                           "trainable_pct": round(100 * trainable / total, 4), "lr": tcfg.optimizer.lr,
                           "steps": tcfg.steps, "wall_s": result.wall_s, "rows": len(rows),
                           "tokens": result.tokens, "tokens_per_s": result.tokens_per_s, "tflops": result.tflops,
                           "mfu": result.mfu, "precision": result.precision, "resumed_from": result.resumed_from,
                           "final_train_loss": _r(result.final_loss), "val_loss_before": _r(val_before),
                           "val_loss_after": _r(val_after),
                           "engine_val_loss": _r(result.val_loss), "engine_first_val_loss": _r(result.first_val_loss),
                           "valid_examples": len(data.valid[: cfg.max_valid_examples]),
                           "metrics": f"{method}/metrics.jsonl"}
    tail = _summarise_metrics(read_records(mdir / "metrics.jsonl"))
    out["final_train_loss_avg10"] = tail["final_train_loss"]
    if method == "lora":
        lora_mod.save_adapter(model, mdir / "adapter", tokenizer)
        merged = lora_mod.merge(model)
        export_hf(merged, mdir / "hf", tokenizer=tokenizer)
        out |= {"adapter": "lora/adapter", "hf": "lora/hf",
                "lora": {"r": cfg.lora.r, "alpha": cfg.lora.alpha, "dropout": cfg.lora.dropout,
                         "target_modules": cfg.lora.target_modules}}
    else:
        export_hf(model, mdir / "hf", tokenizer=tokenizer)
        out["hf"] = "full/hf"
    inherit_unigram_floor(base, mdir / "hf")
    if not cfg.keep_checkpoints:
        folders.remove(mdir / "checkpoints")
    write_json_atomic(done, out)
    return out


def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)


def run(cfg: TuneConfig, ctx: StageContext) -> dict[str, Any]:
    """Prepare the instruction data once, tune each method, write ``tune.json``; returns manifest counts."""
    from transformers.utils import logging as hf_logging

    from kamado.model.integrity import check_model_folder, check_tokenizer_fits
    from kamado.tune.sft import prepare
    from kamado.tune.templates import CHAT_TEMPLATE

    hf_logging.disable_progress_bar()
    base = base_dir(cfg, ctx)
    tokenizer = load_tokenizer(base, ctx.inputs.get("tokenizer"))
    # the check eval and serve make: a tokenizer of another model is refused before any training
    check_tokenizer_fits(check_model_folder(base), tokenizer, base, tokenizer.name_or_path or base)
    sources = [(Path(n).stem if Path(n).suffix else n, catalog.resolve(n, ctx.data_root)) for n in cfg.data]
    t0 = time.perf_counter()
    data = prepare(tokenizer, sources, cfg.train.seq_len, valid_fraction=cfg.valid_fraction,
                   max_examples=cfg.max_examples, seed=ctx.seed)
    prep_s = time.perf_counter() - t0
    console.print(f"tune: {data.stats['train_examples']:,} train / {data.stats['valid_examples']:,} valid examples, "
                  f"{data.stats['train_target_tokens']:,} answer tokens of {data.stats['train_tokens']:,} "
                  f"({data.stats['truncated']} truncated, {data.stats['dropped']} dropped) in {prep_s:.1f}s")
    write_json_atomic(ctx.out / "data.json", data.stats | {"prep_s": round(prep_s, 2)})
    methods: dict[str, Any] = {}
    for method in cfg.methods:
        methods[method] = tune_one(method, cfg, ctx, base, tokenizer, data)
    summary = {"base": str(cfg.base) if cfg.base else "pretrain/hf", "data": data.stats, "chat_template": CHAT_TEMPLATE,
               "methods": methods}
    write_json_atomic(ctx.out / "tune.json", summary)
    from kamado.tune.artifacts import TuneCounts

    return TuneCounts.of(data.stats, methods).to_counts()


def summary_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """Rows for the side-by-side table (one per method)."""
    rows = []
    for m, r in summary.get("methods", {}).items():
        rows.append([m, f"{r['trainable_params']:,}", f"{r['trainable_pct']:.2f}%", f"{r['wall_s']:.1f}s",
                     _fmt(r.get("tokens_per_s"), ".0f"), _fmt(r.get("final_train_loss")),
                     _fmt(r.get("val_loss_before")), _fmt(r.get("val_loss_after"))])
    return rows


SUMMARY_COLUMNS = ["method", "trainable", "%", "wall", "tok/s", "train loss", "val before", "val after"]


def _fmt(x: Any, spec: str = ".4f") -> str:
    return "—" if x is None else format(x, spec)
