"""``kamado data``: the data catalog (list, download) and token packing / mixture commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kamado.cli.options import option
from kamado.data.config import PackConfig

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_cmd(
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Data root to check.")] = None,
) -> None:
    """List the named data sets, their licenses and whether they are present under the data root.

    Example: kamado data list
    """
    from kamado import catalog
    from kamado.ui import console, table

    root = catalog.default_data_root() if data_root is None else data_root
    rows = []
    for ds in catalog.datasets().values():
        here = "yes" if root and (root / ds.path).is_file() else "no"
        lic = (ds.license or "").split(" (")[0]
        rows.append([ds.name, ds.path, ds.records, lic, here, "direct" if ds.url else "mirror"])
    console.print(table(f"data sets (root: {root})", ["name", "path", "records", "license", "present", "download"], rows))


@app.command("download")
def download_cmd(
    names: Annotated[list[str], typer.Argument(help="Data set names (see `kamado data list`).")],
    to: Annotated[Path, typer.Option("--to", help="Data root to download into.")] = Path("data"),
    url: Annotated[str | None, typer.Option(help="Download from this URL instead (one name only).")] = None,
) -> None:
    """Download data sets into a data root, verifying each file's SHA-256 before it is kept.

    Example: KAMADO_DATA_MIRROR=https://mirror.example/kamado kamado data download dolly-ja --to data
    """
    from kamado import catalog
    from kamado.ui import console

    for n in names:
        p = catalog.download(n, to, url=url)
        console.print(f"[green]✓[/] {n} -> {p}")


@app.command("pack")
def pack_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Corpus folders, shard files/folders, data-set names, NAME=PATH.")],
    tokenizer: Annotated[Path, typer.Option("--tokenizer", "-t", help="Tokenizer folder (kamado tokenizer train).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pack folder to write.")],
    workers: int = option(PackConfig, "workers"),
    valid_fraction: float = option(PackConfig, "valid_fraction"),
    executor: str = option(PackConfig, "executor"),
    force: Annotated[bool, typer.Option("--force", help="Re-pack even when the input is unchanged.")] = False,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Data root for data-set names.")] = None,
) -> None:
    """Tokenize documents into per-source memory-mapped token files with a document index and a validation split.

    Unchanged input (same files, tokenizer and settings) is not packed again.

    Examples:
      kamado data pack runs/tiny/corpus --tokenizer runs/tiny/tokenizer --out pack
      kamado data pack ja=ja-wikipedia en=wikitext2 --tokenizer tok8k --out pack --workers 4
    """
    import time

    from kamado.config import KamadoError
    from kamado.corpus.docs import resolve_inputs
    from kamado.data.pack import pack
    from kamado.manifest import read_manifest, write_manifest
    from kamado.ui import console, progress, table

    if executor not in ("local", "ray"):
        raise KamadoError(f"--executor {executor!r}: expected local or ray")
    cfg = PackConfig(workers=workers, valid_fraction=valid_fraction, executor=executor)  # type: ignore[arg-type]
    specs = resolve_inputs(inputs, data_root)
    t0 = time.perf_counter()
    with progress("packing", total=None, unit="jobs") as advance:
        counts = pack(specs, tokenizer, out, cfg, advance=advance, force=force)
    wall = time.perf_counter() - t0
    if counts.get("skipped"):
        console.print(f"[green]✓[/] {out}: input unchanged, pack is up to date (use --force to redo)")
    if not counts.get("skipped") or read_manifest(out) is None:
        write_manifest(out, stage="data", config=cfg.model_dump(mode="json") | {"inputs": inputs,
                       "tokenizer": str(tokenizer)}, counts=counts, timings={"wall_s": round(wall, 3)})
    rows = [[name, s["lang"], s["docs"], s["train_tokens"], s["valid_tokens"],
             counts.get(f"chars_per_token/{name}", "")] for name, s in counts["per_source"].items()]
    rows.append(["total", "", counts["docs"], counts["tokens"], counts["valid_tokens"], ""])
    console.print(table(f"pack {out} ({counts['dtype']}, {counts.get('tokens_per_s') or 0:,.0f} tokens/s)",
                        ["source", "lang", "docs", "train tokens", "valid tokens", "chars/token"], rows))


@app.command("mixture")
def mixture_cmd(
    recipe: Annotated[Path, typer.Option("--recipe", "-r", help="Recipe YAML (its pretrain section).")],
    run: Annotated[Path | None, typer.Option("--run", help="Run folder: its pack, and realized counts when trained.")] = None,
    pack_dir: Annotated[Path | None, typer.Option("--pack", help="Pack folder (default: RUN/data).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe value: KEY.PATH=VALUE.")] = None,
) -> None:
    """Planned tokens per source and stage of a recipe's mixture; realized tokens for a finished run.

    Warns when a source would be repeated more than the mixture's max_epochs.

    Examples:
      kamado data mixture --recipe recipes/tiny.yaml --run runs/tiny
      kamado data mixture --recipe recipes/tiny.yaml --pack pack --set pretrain.train.steps=5000
    """
    import json

    from kamado.config import KamadoError
    from kamado.data.mixture import plan, realized
    from kamado.jsonl import read_jsonl
    from kamado.recipe import load_recipe
    from kamado.ui import console, table

    rec = load_recipe(recipe, set_ or [])
    if rec.pretrain is None:
        raise KamadoError(f"{recipe}: the recipe has no pretrain section, so there is no mixture to plan")
    tr, mix = rec.pretrain.train, rec.pretrain.mixture
    if pack_dir is None and run is not None:
        pack_dir = run / "data"
    sources: dict[str, dict] = {}
    note = ""
    if pack_dir is not None and (pack_dir / "pack.json").is_file():
        sources = json.loads((pack_dir / "pack.json").read_text(encoding="utf-8"))["sources"]
    else:
        keys = sorted({k for st in (mix.stages or []) for k in st.weights} | set(mix.weights or {}))
        if not keys:
            raise KamadoError("the mixture weights sources by size, which needs a pack: pass --pack or --run")
        sources = {k: {"lang": k, "train_tokens": 0} for k in keys}
        note = " (no pack given: token counts of the sources unknown, epochs not computed)"
    rows, warns = plan(sources, mix, tr.steps, tr.batch_size, tr.seq_len)
    real: dict[int, dict[str, int]] = {}
    metrics = run / "pretrain" / "metrics.jsonl" if run is not None else None
    if metrics is not None and metrics.is_file():
        recs = read_jsonl(metrics, skip_bad=True)
        real = realized(recs)
        done = max((int(r["step"]) for r in recs if "mix_stage" in r and isinstance(r.get("step"), int)), default=0)
        if real and done != tr.steps:
            note += f" (the run logged {done:,} of the recipe's {tr.steps:,} steps)"
    cols = ["stage", "steps", "source", "lang", "plan share", "plan tokens", "epochs (cum.)"]
    if real:
        cols += ["real tokens", "real share", "Δ pp"]
    out_rows = []
    for r in rows:
        row: list = [r.stage, f"{r.first_step}-{r.last_step}", r.source, r.lang, r.share, r.tokens,
                     "?" if not sources[r.source].get("train_tokens") else round(r.epochs_cum, 3)]
        if real:
            st = real.get(r.stage, {})
            tot = sum(st.values()) or 1
            got = st.get(r.source, 0)
            row += [got, got / tot, 100 * (got / tot - r.share)] if st else ["", "", ""]
        out_rows.append(row)
    console.print(table(f"mixture of {recipe} ({tr.steps:,} steps × {tr.batch_size} × {tr.seq_len} tokens){note}",
                        cols, out_rows))
    for w in warns:
        console.print(f"[bold yellow]warning:[/] {w}")
