"""``kamado pretrain``: train a LLaMA preset on packed token shards (one process, or torchrun + FSDP2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kamado.cli.options import option, recipe_option
from kamado.stage import DEFAULT_SEED
from kamado.train.config import PretrainConfig, TrainConfig


def pretrain(
    pack: Annotated[Path | None, typer.Option("--pack", help="Packed data folder (pack.json), e.g. runs/tiny/data.")] = None,
    tokenizer: Annotated[Path | None, typer.Option("--tokenizer", help="Tokenizer folder, e.g. runs/tiny/tokenizer.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: metrics.jsonl, checkpoints/, hf/.")] = Path("runs/pretrain"),
    preset: str | None = recipe_option(PretrainConfig, "model.preset", section="pretrain"),
    steps: int | None = recipe_option(PretrainConfig, "train.steps", section="pretrain"),
    nproc: int | None = recipe_option(PretrainConfig, "train.nproc", section="pretrain"),
    recipe: Annotated[Path | None, typer.Option("--recipe", help="Take the settings from this recipe's "
                                                "pretrain section.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a pretrain setting, e.g. "
                                                   "train.batch_size=16, model.overrides.num_hidden_layers=2.")] = None,
    precision: str | None = recipe_option(PretrainConfig, "train.precision", section="pretrain"),
    compile_: bool = option(TrainConfig, "compile", note="--no-compile leaves a recipe's compile: true as it is."),
    resume: bool = option(TrainConfig, "resume", note="--resume leaves a recipe's resume: false as it is."),
    export: Annotated[bool, typer.Option("--export", help="Only export the latest checkpoint in --out to "
                                         "--out/hf (Hugging Face format) and stop.")] = False,
    seed: int | None = recipe_option(PretrainConfig, "train.seed", section="pretrain",
                                     note=f"Without a recipe: {DEFAULT_SEED}."),
    write_spec: Annotated[bool, typer.Option("--write-spec", help="Only write OUT/launch.json for "
                                             "`torchrun -m kamado.train.launch` (Slurm: scripts/slurm/).")] = False,
) -> None:
    """Pretrain a LLaMA model on the ja/en token mixture; logs tokens/s and MFU, exports a Hugging Face model.

    Runs the pretrain stage of `kamado run`: every option overrides the same field of the recipe's
    ``pretrain`` section (or of its defaults), and OUT gets the stage's manifest.json.

    Re-running the same command resumes from the latest complete checkpoint in --out.

    Examples:
      kamado pretrain --pack runs/tiny/data --tokenizer runs/tiny/tokenizer --out runs/pt --preset tiny --steps 300
      kamado pretrain --pack runs/tiny/data --tokenizer runs/tiny/tokenizer --out runs/pt --nproc 2
      kamado pretrain --recipe recipes/tiny.yaml --pack runs/tiny/data --tokenizer runs/tiny/tokenizer --out runs/pt
      kamado pretrain --out runs/pt --tokenizer runs/tiny/tokenizer --export
      kamado pretrain --pack D --tokenizer T --out runs/7b --preset 7b --nproc 8 --write-spec  # then sbatch
    """

    from pydantic import ValidationError

    from kamado import folders
    from kamado.config import ConfigError, KamadoError, format_validation_error
    from kamado.recipe import apply_override, load_recipe
    from kamado.stage import StageContext, run_stage_alone
    from kamado.train.artifacts import TrainArtifact
    from kamado.ui import console, table

    if export:
        from kamado.train.pretrain import export_checkpoint

        path = export_checkpoint(out, out / "hf", tokenizer=tokenizer)
        console.print(f"exported {path}")
        return
    if pack is None or tokenizer is None:
        raise KamadoError("--pack and --tokenizer are required (or --export)")
    for p, what in ((pack, "--pack"), (tokenizer, "--tokenizer")):
        if not p.is_dir():
            raise KamadoError(f"{what} {p}: no such folder")
    run_seed = DEFAULT_SEED
    data: dict = {}
    if recipe is not None:
        rec = load_recipe(recipe)
        run_seed = rec.seed
        if rec.pretrain is not None:
            data = rec.pretrain.model_dump(mode="json")
    for ov in set_ or []:
        apply_override(data, ov)
    upd = {"steps": steps, "nproc": nproc, "precision": precision, "seed": seed}
    data.setdefault("train", {}).update({k: v for k, v in upd.items() if v is not None})
    if compile_:
        data["train"]["compile"] = True
    if not resume:
        data["train"]["resume"] = False
    if preset is not None:
        data.setdefault("model", {})["preset"] = preset
    try:
        cfg = PretrainConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError("invalid pretrain settings\n" + format_validation_error(e, "pretrain")) from None
    folders.mark(out, "stage", stage="pretrain")  # a user's non-empty folder is refused before any change
    if not resume:
        folders.remove(out / "checkpoints")
    from kamado.train.pretrain import write_spec as _write_spec

    ctx = StageContext(name="pretrain", out=out, inputs={"data": pack, "tokenizer": tokenizer},
                       seed=run_seed if seed is None else seed, cache_dir=None)
    if write_spec:
        path = _write_spec(cfg, ctx, out / "launch.json")
        console.print(f"wrote {path}; launch each node with:\n  torchrun --nnodes N --nproc-per-node G "
                      f"--rdzv-backend c10d --rdzv-endpoint HEAD:29500 -m kamado.train.launch {path}\n"
                      f"or under Slurm: sbatch --nodes N --gpus-per-node G scripts/slurm/pretrain.sbatch {path}\n"
                      "(on CPU nodes: KAMADO_NPROC_PER_NODE=G sbatch ...; see docs/cluster.md)")
        return
    run_stage_alone("pretrain", cfg, out, {"data": pack, "tokenizer": tokenizer}, seed=ctx.seed)
    art = TrainArtifact.open(out)
    counts, res = art.counts.to_counts(), art.result
    wall = counts["wall_s"] or 0.0
    rows = [["preset", cfg.model.preset], ["parameters", f"{counts['params']:,}"], ["ranks", counts["world_size"]],
            ["precision", counts["precision"]], ["steps", counts["steps"]], ["tokens", f"{counts['tokens']:,}"],
            ["final train loss", f"{counts['final_loss']:.4f}" if counts["final_loss"] is not None else "-"],
            ["val loss (start → end)", f"{counts['first_val_loss'] or float('nan'):.4f} → {counts['val_loss'] or float('nan'):.4f}"],
            ["tokens/s (median)", f"{counts['tokens_per_s']:,.0f}"],
            ["TFLOP/s per device", f"{counts['tflops']:.4f}"],
            ["MFU", f"{100 * counts['mfu']:.2f}% of {counts['peak_tflops']:.2f} TFLOP/s "
                    f"({res.get('extra', {}).get('peak', '').split(' (')[0]})"],
            ["resumed from step", counts["resumed_from"] if counts["resumed_from"] is not None else "-"],
            ["wall", f"{wall:.1f}s"], ["HF model", str(out / "hf")], ["metrics", str(out / "metrics.jsonl")]]
    console.print(table("kamado pretrain", ["", "value"], rows))
