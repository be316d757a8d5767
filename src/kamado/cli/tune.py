"""``kamado tune``: full fine-tuning and/or LoRA of an HF LLaMA folder on instruction data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def tune(
    base: Annotated[Path, typer.Option("--base", help="HF LLaMA folder to tune (with tokenizer files), "
                                       "e.g. runs/tiny/pretrain/hf.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (full/, lora/, tune.json).")],
    data: Annotated[list[str] | None, typer.Option("--data", help="Instruction data: a registry name "
                                                   "(dolly-ja) or a JSONL file; repeatable.")] = None,
    method: Annotated[str, typer.Option("--method", help="full, lora or both.")] = "both",
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps per method.")] = None,
    max_examples: Annotated[int | None, typer.Option("--max-examples", help="Read at most N records per source.")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", help="Tokens per row.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Rows per optimizer step.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate of full fine-tuning.")] = None,
    lora_lr: Annotated[float | None, typer.Option("--lora-lr", help="Learning rate of LoRA.")] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r", help="LoRA rank.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="fp32, bf16, bf16-autocast or bf16-pure.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, the order and the init.")] = 1234,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Folder of the shared data sets.")] = None,
) -> None:
    """Instruction-tune a model with full fine-tuning and LoRA, and compare them side by side.

    Writes OUT/full/hf, OUT/lora/adapter, OUT/lora/hf (merged), OUT/<method>/metrics.jsonl and OUT/tune.json.

    Loss is taken on the assistant answers only. Re-running the same command resumes unfinished work.

    Examples:
      kamado tune --base runs/tiny/pretrain/hf --data dolly-ja --method both --out runs/tune-demo --steps 60
      kamado tune --base runs/tiny/pretrain/hf --data my_chats.jsonl --method lora --lora-r 16 --out runs/lora16
    """
    import time

    from kamado.config import KamadoError
    from kamado.manifest import write_manifest
    from kamado.stage import StageContext
    from kamado.tune.config import LoraSettings, TuneConfig
    from kamado.tune.stage import SUMMARY_COLUMNS, run, summary_rows
    from kamado.ui import console, table

    methods = {"both": ["full", "lora"], "full": ["full"], "lora": ["lora"]}.get(method)
    if methods is None:
        raise KamadoError(f"--method {method!r}: expected full, lora or both")
    cfg = TuneConfig()
    train = cfg.train
    upd = {k: v for k, v in {"steps": steps, "seq_len": seq_len, "batch_size": batch_size,
                             "precision": precision}.items() if v is not None}
    if upd.get("steps"):
        upd |= {"eval_every": max(1, upd["steps"] // 2), "ckpt_every": upd["steps"],
                "warmup_steps": min(train.warmup_steps, max(1, upd["steps"] // 10))}
    if lr is not None:
        upd["optimizer"] = train.optimizer.model_copy(update={"lr": lr, "min_lr": lr / 10})
    try:
        train = train.model_validate(train.model_dump() | upd)
        cfg = TuneConfig.model_validate(cfg.model_dump() | {
            "data": data or ["dolly-ja"], "methods": methods, "max_examples": max_examples, "train": train.model_dump(),
            "base": str(base), "lora": LoraSettings(r=lora_r or cfg.lora.r,
                                                    alpha=2 * lora_r if lora_r else cfg.lora.alpha).model_dump(),
            "lora_lr": lora_lr if lora_lr is not None else cfg.lora_lr})
    except ValueError as e:
        raise KamadoError(f"invalid option: {e}") from None
    from kamado.registry import default_data_root

    out.mkdir(parents=True, exist_ok=True)
    root = data_root or default_data_root()
    ctx = StageContext(name="tune", out=out, data_root=root, seed=seed)
    t0 = time.perf_counter()
    counts = run(cfg, ctx)
    write_manifest(out, stage="tune", config=cfg.model_dump(mode="json"), counts=counts,
                   timings={"wall_s": round(time.perf_counter() - t0, 3)})
    import json

    summary = json.loads((out / "tune.json").read_text(encoding="utf-8"))
    console.print(table("kamado tune", SUMMARY_COLUMNS, summary_rows(summary)))
    console.print(f"models: {', '.join(str(out / m['hf']) for m in summary['methods'].values())}")
