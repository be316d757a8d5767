"""``kamado plan``: what a recipe's pretraining costs on paper (GPU-hours, days, memory per GPU, checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _corpus_measured(run: Path) -> dict:
    """MB/s per core and the kept fraction from a finished corpus stage (``RUN/corpus/**/stats.json``)."""
    import json

    mb = cpu = chars_in = chars_kept = 0.0
    for f in sorted((run / "corpus").rglob("stats.json")):
        try:
            st = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if st.get("text_bytes_in") and st.get("cpu_seconds"):
            mb += st["text_bytes_in"] / 1e6
            cpu += float(st["cpu_seconds"])
            chars_in += st.get("chars_in", 0)
            chars_kept += st.get("chars_kept", 0)
    if not cpu:
        return {}
    out = {"mb_per_s_per_core": round(mb / cpu, 3), "mb_source": f"measured in {run}"}
    if chars_in:
        out["kept_fraction"] = round(chars_kept / chars_in, 3)
    return out


def plan(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML with a pretrain section, e.g. recipes/calm2-7b.yaml.")],
    devices: Annotated[str, typer.Option("--devices", help="GPUs per node and kind: 8xH100, 8xA100-40GB, "
                                         "8xA100-80GB, 8xH100-PCIe, 8xH200.")] = "8xH100",
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes.")] = 1,
    mfu: Annotated[float | None, typer.Option("--mfu", help="Model FLOPs utilisation vs the bf16 peak (default: "
                                              "measured by --bench, else 0.40).")] = None,
    precision: Annotated[str, typer.Option("--precision", help="bf16 or fp8 (torchao float8, Hopper only).")] = "bf16",
    bench: Annotated[Path | None, typer.Option("--bench", help="`kamado bench --json` output to take the MFU "
                                               "from (same preset and device).")] = None,
    fp8_speedup: Annotated[float, typer.Option("--fp8-speedup", help="FP8 step-time speed-up over bf16.")] = 1.3,
    restart_loss: Annotated[float, typer.Option("--restart-loss", help="Fraction of time lost to failures and "
                                                "restarts (goodput).")] = 0.05,
    corpus_mb_s: Annotated[float | None, typer.Option("--corpus-mb-s", help="Corpus cleaning speed, MB of text per "
                                                      "second per core (default: measured in --run).")] = None,
    run: Annotated[Path | None, typer.Option("--run", help="A run folder of this or a smaller recipe: its corpus "
                                             "stage's measured MB/s and kept fraction.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe value: KEY.PATH=VALUE.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Plan a recipe's pretraining on paper: parameters, tokens, FLOPs (6ND + attention), GPU-hours and days
    at an MFU, memory per GPU under FSDP with and without activation checkpointing, checkpoint size, corpus
    core-hours and a goodput allowance. See docs/scale.md for the formulas and the CALM2-7B plan.

    Examples:
      kamado plan recipes/calm2-7b.yaml --devices 8xH100 --mfu 0.4
      kamado plan recipes/calm2-7b.yaml --devices 8xH100 --nodes 4 --precision fp8 --json
      kamado plan recipes/calm2-7b.yaml --devices 8xA100-40GB --bench bench.json
    """
    import json
    import sys

    from kamado.bench.plan import make_plan, plan_rows
    from kamado.config import KamadoError
    from kamado.model.presets import llama_config
    from kamado.recipe import load_recipe
    from kamado.ui import console, table

    rec = load_recipe(recipe, set_ or [])
    pre = getattr(rec, "pretrain", None)
    if pre is None:
        raise KamadoError(f"{recipe}: the recipe has no pretrain section to plan")
    tok = getattr(rec, "tokenizer", None)
    vocab = getattr(tok, "vocab_size", None) if tok is not None else None
    mconf = llama_config(pre.model.preset, vocab_size=vocab, overrides=pre.model.overrides)
    t = pre.train
    corpus: dict = {}
    if run is not None:
        corpus |= _corpus_measured(run)
    if corpus_mb_s is not None:
        corpus |= {"mb_per_s_per_core": corpus_mb_s, "mb_source": "given"}
    if corpus:
        corpus.setdefault("kept_fraction", 0.5)
        corpus.setdefault("bytes_per_token", 4.0)
        corpus["epochs"] = float(getattr(pre.mixture, "max_epochs", 1) or 1)
    p = make_plan(mconf, preset=pre.model.preset, steps=t.steps, batch_size=t.batch_size, seq_len=t.seq_len,
                  grad_accum=t.grad_accum, devices=devices, nodes=nodes, precision=precision, mfu=mfu,
                  bench=json.loads(bench.read_text()) if bench else None, fp8_speedup=fp8_speedup,
                  activation_checkpointing=t.activation_checkpointing, fused_ce=t.fused_ce,
                  eval_every=t.eval_every, eval_batches=t.eval_batches, ckpt_every=t.ckpt_every,
                  restart_loss=restart_loss, corpus=corpus)
    if json_out:
        sys.stdout.write(json.dumps(p.to_dict(), indent=1) + "\n")
        return
    console.print(table(f"kamado plan: {rec.name} on {p.gpus} × {p.device} ({p.precision})", ["", ""],
                        [list(r) for r in plan_rows(p)]))
