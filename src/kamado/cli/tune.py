"""``kamado tune``: full fine-tuning and/or LoRA of an HF LLaMA folder on instruction data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kamado.cli.options import recipe_option
from kamado.stage import DEFAULT_SEED
from kamado.tune.config import TuneConfig


def tune(
    base: Annotated[Path, typer.Option("--base", help="HF LLaMA folder to tune (with tokenizer files), "
                                       "e.g. runs/tiny/pretrain/hf.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (full/, lora/, tune.json).")],
    data: list[str] | None = recipe_option(TuneConfig, "data", section="tune", note="Repeatable."),
    method: str | None = recipe_option(TuneConfig, "methods", "--method", section="tune",
                                       note="Here: full, lora or both."),
    steps: int | None = recipe_option(TuneConfig, "train.steps", section="tune", note="Per method."),
    max_examples: int | None = recipe_option(TuneConfig, "max_examples", section="tune"),
    seq_len: int | None = recipe_option(TuneConfig, "train.seq_len", section="tune"),
    batch_size: int | None = recipe_option(TuneConfig, "train.batch_size", section="tune"),
    lr: float | None = recipe_option(TuneConfig, "train.optimizer.lr", section="tune",
                                     note="Of full fine-tuning (LoRA: --lora-lr)."),
    min_lr: float | None = recipe_option(TuneConfig, "train.optimizer.min_lr", section="tune"),
    lora_lr: float | None = recipe_option(TuneConfig, "lora_lr", section="tune"),
    lora_r: int | None = recipe_option(TuneConfig, "lora.r", "--lora-r", section="tune"),
    precision: str | None = recipe_option(TuneConfig, "train.precision", section="tune"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other tune setting: KEY.PATH=VALUE "
                                                   "(e.g. train.eval_every=10, lora.alpha=32).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, the order and the init.")] = DEFAULT_SEED,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Folder of the shared data sets.")] = None,
) -> None:
    """Instruction-tune a model with full fine-tuning and LoRA, and compare them side by side.

    Runs the tune stage of `kamado run` on --base: every option overrides the same field of the recipe's
    ``tune`` section, with the same defaults. Writes OUT/full/hf, OUT/lora/adapter, OUT/lora/hf (merged),
    OUT/<method>/metrics.jsonl, OUT/tune.json and OUT/manifest.json.

    Loss is taken on the assistant answers only. Re-running the same command resumes unfinished work.

    Examples:
      kamado tune --base runs/tiny/pretrain/hf --data dolly-ja --method both --out runs/tune-demo --steps 60
      kamado tune --base runs/tiny/pretrain/hf --data my_chats.jsonl --method lora --lora-r 16 --out runs/lora16
    """
    from pydantic import ValidationError

    from kamado import catalog
    from kamado.config import ConfigError, KamadoError, format_validation_error
    from kamado.recipe import apply_override
    from kamado.stage import run_stage_alone
    from kamado.tune.artifacts import TuneArtifact
    from kamado.tune.stage import SUMMARY_COLUMNS, summary_rows
    from kamado.ui import console, table

    cfg_data: dict = {}
    for ov in set_ or []:
        apply_override(cfg_data, ov)
    if method is not None:
        methods = {"both": ["full", "lora"], "full": ["full"], "lora": ["lora"]}.get(method)
        if methods is None:
            raise KamadoError(f"--method {method!r}: expected full, lora or both")
        cfg_data["methods"] = methods
    given = {"data": data or None, "max_examples": max_examples, "lora_lr": lora_lr, "train.steps": steps,
             "train.seq_len": seq_len, "train.batch_size": batch_size, "train.precision": precision,
             "train.optimizer.lr": lr, "train.optimizer.min_lr": min_lr, "lora.r": lora_r}
    for key, v in given.items():
        if v is not None:
            node = cfg_data
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = v
    cfg_data["base"] = str(base)
    try:
        cfg = TuneConfig.model_validate(cfg_data)
    except ValidationError as e:
        raise ConfigError("invalid tune settings\n" + format_validation_error(e, "tune")) from None
    run_stage_alone("tune", cfg, out, seed=seed, data_root=data_root or catalog.default_data_root())
    art = TuneArtifact.open(out)
    console.print(table("kamado tune", SUMMARY_COLUMNS, summary_rows(art.summary)))
    console.print(f"models: {', '.join(str(art.hf_dir(m)) for m in art.methods)}")

