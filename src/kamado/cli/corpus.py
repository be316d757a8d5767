"""``kamado corpus …``: clean raw text with a Japanese-first filter chain, inspect the result, deduplicate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kamado.cli import corpus_dedup as dedup_cli
from kamado.cli.options import option
from kamado.corpus.config import CorpusConfig, SourceSpec
from kamado.corpus.io.writers import COMMAND_FORMAT

app = typer.Typer(no_args_is_help=True)


@app.command("clean")
def clean(
    inputs: Annotated[list[str], typer.Argument(help="Shard files or folders (.jsonl[.gz|.zst], .parquet, .txt, WET), "
                                                "or data-set names from `kamado data list` (e.g. aozora, mc4-ja-labeled).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: kept/, rejected/, errors.jsonl, stats.json.")],
    recipe: str = option(CorpusConfig, "chain", "--recipe", "-r"),
    executor: str = option(CorpusConfig, "executor"),
    workers: int = option(CorpusConfig, "workers"),
    ray_address: str | None = option(CorpusConfig, "ray_address"),
    source: Annotated[str | None, typer.Option(help="Source name written into documents that have none "
                                               "(default: the file name).")] = None,
    max_docs: int | None = option(SourceSpec, "max_docs"),
    shard_mb: int = option(CorpusConfig, "shard_mb"),
    split_mb: int = option(CorpusConfig, "split_mb"),
    format: str = option(CorpusConfig, "shard_format", "--format", default=COMMAND_FORMAT),
    level: Annotated[int | None, typer.Option("--level", help="Compression level (default: the chain's gzip_level, "
                                              "1; zstd 1).")] = None,
    text_doc_kb: int = option(CorpusConfig, "text_doc_kb"),
    overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds a different job (never one "
                                            "that holds an input: that is refused).")] = False,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Folder of the shared data sets "
                                                   "(word lists).")] = None,
    encoding: str | None = option(SourceSpec, "encoding"),
) -> None:
    """Clean documents: normalize, strip personal data and boilerplate, filter, and account for every line.

    Every input line ends up kept, rejected (with the step and reason) or in errors.jsonl (with file and
    line); stats.json has the totals and per-step counts. Re-running the same command resumes an
    interrupted job (only unfinished shards are redone); the output does not depend on --executor or
    --workers.

    Examples:
      kamado corpus clean aozora ja-wikipedia mc4-ja-labeled fineweb2-ja --out runs/clean-ja
      kamado corpus clean ../shared/data/ja_web_noisy/mc4ja_paragraphs_labeled.jsonl --out runs/clean-web
      kamado corpus clean web/*.jsonl.gz --out runs/clean --recipe my-ja.yaml --workers 4
      kamado corpus clean crawl/ --out runs/clean --executor ray --ray-address auto
    """
    from kamado.catalog import default_data_root, resolve
    from kamado.cli._guard import check_writable, refuse_overlap
    from kamado.config import KamadoError
    from kamado.corpus.config import load_chain
    from kamado.corpus.io.encoding import check_encoding
    from kamado.corpus.jobs.clean import all_error_files, print_summary, run_clean

    chain, base = load_chain(recipe, Path.cwd())
    encoding = check_encoding(encoding)
    root = data_root or default_data_root()
    paths = [Path(x) if Path(x).exists() else resolve(x, root) for x in inputs]
    refuse_overlap(paths, out, "corpus clean")
    check_writable(out)
    stats = run_clean(paths, out, chain, executor=executor, workers=workers, ray_address=ray_address,
                      data_root=root, base_dir=base, source=source, max_docs=max_docs,
                      shard_bytes=shard_mb << 20, text_doc_bytes=text_doc_kb * 1000, overwrite=overwrite,
                      format=format, level=level, encoding=encoding, split_bytes=split_mb << 20)
    print_summary(stats, out)
    bad = all_error_files(stats, out)
    if bad:
        raise KamadoError(f"corpus clean: every record of {len(bad)} input file(s) is an error: "
                          + "; ".join(bad) + f" (all errors are listed in {out / 'errors.jsonl'})")


@app.command("inspect")
def inspect(
    folder: Annotated[Path | None, typer.Argument(help="Output folder of `kamado corpus clean`.")] = None,
    per_reason: Annotated[int, typer.Option("--per-reason", "-n", help="Samples shown per rejection reason.")] = 2,
    reason: Annotated[str | None, typer.Option(help="Only this step or reason code (e.g. low_hiragana).")] = None,
    chars: Annotated[int, typer.Option(help="Characters shown per document.")] = 240,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    labelled: Annotated[list[str] | None, typer.Option("--labelled", help="Instead of a folder: per-filter hits on "
                                                      "good vs bad paragraphs of labelled JSONL (e.g. mc4-ja-labeled).")] = None,
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="The chain for --labelled.")] = "default-ja",
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Folder of the shared data sets.")] = None,
) -> None:
    """Show kept and rejected documents side by side, a few per rejection reason, with their measures;
    or, with --labelled, how each filter of a chain falls on paragraphs labelled good or bad.

    Examples:
      kamado corpus inspect runs/clean-web
      kamado corpus inspect runs/clean-web --reason low_hiragana -n 5
      kamado corpus inspect --labelled mc4-ja-labeled --recipe default-ja
    """
    if labelled:
        from kamado.catalog import default_data_root, resolve
        from kamado.corpus.config import load_chain
        from kamado.corpus.inspect.labelled import filter_table, format_table
        from kamado.corpus.steps.base import Env

        chain, base = load_chain(recipe, Path.cwd())
        root = data_root or default_data_root()
        paths = [Path(x) if Path(x).exists() else resolve(x, root) for x in labelled]
        typer.echo(format_table(filter_table(chain, Env(root, base), paths)))
        return
    if folder is None:
        raise typer.BadParameter("give an output folder, or --labelled FILE")
    from kamado.corpus.inspect.samples import show

    show(folder, per_reason=per_reason, only=reason, chars=chars, seed=seed)


@app.command("retune")
def retune(
    folder: Annotated[Path, typer.Argument(help="Output folder of `kamado corpus clean`.")],
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="The chain with new thresholds (same step names).")],
) -> None:
    """What new thresholds would change, decided from the measurements stored with each document
    (nothing is recomputed or rewritten).

    Examples:
      kamado corpus retune runs/clean-web --recipe my-chain.yaml
    """
    from kamado.corpus.config import load_chain
    from kamado.corpus.inspect.samples import _iter
    from kamado.corpus.steps.base import Env
    from kamado.corpus.steps.chain import build_steps, redecide
    from kamado.ui import console, table

    chain, base = load_chain(recipe, Path.cwd())
    steps = build_steps(chain, Env(None, base))
    if not (folder / "stats.json").is_file():
        from kamado.config import KamadoError

        raise KamadoError(f"{folder}: not an output folder of `kamado corpus clean` (no stats.json)")
    newly: dict[str, int] = {}
    freed = still = kept = 0
    for rec in _iter(folder / "kept"):
        kept += 1
        by, _ = redecide(rec, chain, steps=steps)
        if by is not None:
            newly[by] = newly.get(by, 0) + 1
    for rec in _iter(folder / "rejected"):
        by, _ = redecide(rec, chain, steps=steps)
        if by is None:
            freed += 1
        else:
            still += 1
    rows = [[step, n] for step, n in sorted(newly.items(), key=lambda kv: -kv[1])]
    console.print(table(f"kept documents the new thresholds would reject ({sum(newly.values()):,} of {kept:,})",
                        ["step", "documents"], rows or [["-", 0]]))
    console.print(f"rejected documents: {still:,} still rejected, {freed:,} pass every filter they were measured by "
                  "(filters after the one that rejected them never ran; re-run clean to be sure)")


app.command("dedup")(dedup_cli.dedup)
app.command("train-classifier")(dedup_cli.train_classifier)
