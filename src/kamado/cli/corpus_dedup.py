"""``kamado corpus dedup`` and ``kamado corpus train-classifier`` (registered by the corpus cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kamado.cli.options import option, settings_options
from kamado.corpus.config import CorpusConfig
from kamado.corpus.dedup.settings import DedupSettings
from kamado.corpus.io.writers import COMMAND_FORMAT


@settings_options(DedupSettings, into="settings", exclude=("exact_sigmas", "lsh_margin", "batch_chars"))
def dedup(
    inputs: Annotated[list[Path], typer.Argument(help="Shard files or folders (.jsonl, .jsonl.gz, .zst, .parquet, ...).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: kept/, rejected/, errors.jsonl, stats.json.")],
    executor: str = option(CorpusConfig, "executor"),
    workers: int = option(CorpusConfig, "workers"),
    ray_address: str | None = option(CorpusConfig, "ray_address"),
    format: str = option(CorpusConfig, "shard_format", "--format", default=COMMAND_FORMAT),
    level: Annotated[int | None, typer.Option("--level", help="Compression level (default: chosen for throughput, "
                                              "gzip 1 / zstd 1).")] = None,
    rejected: Annotated[str, typer.Option("--rejected", help="rejected/ holds: full (each document with rejected_by, "
                                          "reason, duplicate_of) or ids (id, source and the reason only).")] = "full",
    overwrite: Annotated[bool, typer.Option(help="Replace an output folder that is not an earlier dedup result "
                                            "(never one that holds an input: that is refused).")] = False,
    settings: DedupSettings = DedupSettings(),
) -> None:
    """Remove exact and near-duplicate documents; keep the first of each cluster in input order.

    Writes OUT/kept/*.jsonl.gz, OUT/rejected/*.jsonl.gz (each with rejected_by, reason and
    duplicate_of), OUT/errors.jsonl and OUT/stats.json (input = kept + rejected + errors). The result
    is the same for every executor and worker count. --format jsonl.zst or parquet writes those instead;
    --rejected ids keeps only the ids and reasons of rejected documents. The options after --overwrite are
    the recipe's corpus.dedup settings.

    Examples:
      kamado corpus dedup runs/tiny/corpus/ja_web/clean/kept --out dedup/ja_web
      kamado corpus dedup shards/ --out dedup --executor ray --workers 8 --threshold 0.7
      kamado corpus dedup crawl/ --out dedup --format jsonl.zst --rejected ids
    """
    from kamado import folders
    from kamado.cli._guard import check_writable, refuse_overlap, swap_in
    from kamado.config import KamadoError
    from kamado.corpus.dedup.run import run_dedup
    from kamado.ui import console, table

    if executor not in ("local", "ray"):
        raise KamadoError(f"--executor must be local or ray, not {executor!r}")
    if rejected not in ("full", "ids"):
        raise KamadoError(f"--rejected must be full or ids, not {rejected!r}")
    from kamado.corpus.io.writers import shard_format

    format = shard_format(format)
    refuse_overlap(inputs, out, "corpus dedup")
    if out.is_dir() and any(out.iterdir()) and not overwrite and not _is_dedup_output(out):
        raise KamadoError(f"corpus dedup: --out {out} is not empty and holds no earlier dedup result; nothing was "
                          "changed. Choose another --out, or pass --overwrite to replace an earlier kamado output")
    folders.check_ours(out, "corpus dedup: --out")  # --overwrite never replaces a folder kamado did not write
    check_writable(out)
    # write into an attempt folder beside --out; the previous result is replaced only once this one is complete
    attempt = out.with_name(f".{out.name}.attempt")
    folders.check_ours(attempt, "corpus dedup: attempt folder")
    folders.remove(attempt)
    st = run_dedup(inputs, attempt, settings, executor=executor, workers=workers, ray_address=ray_address,
                   format=format, level=level, rejected=rejected)
    swap_in(attempt, out)
    mh = st["steps"][1]
    rows_ = [["input", st["input"]], ["kept", st["kept"]], ["exact duplicates", st["exact_duplicates"]],
             ["near duplicates", st["near_duplicates"]], ["errors", st["errors"]],
             ["LSH", f"{mh['bands']}×{mh['rows']} of {mh['num_perm']}, t={mh['threshold']}"],
             ["verified", f"{mh['verify']}: {mh['verified_links']} of {mh['candidates']} candidate pairs kept"
              + (f" ({mh['accepted_exactly']} of {mh['verified_exactly']} checked on the texts; "
                 f"{mh.get('already_linked', 0)} not read, already in one cluster)"
                 if mh["verify"] == "exact" else "")],
             ["throughput", f"{st['mb']:.1f} MB in {st['seconds']:.1f}s ({st['mb_per_s']:.1f} MB/s)"]]
    console.print(table(f"dedup → {out}", ["", "value"], rows_))


def _is_dedup_output(out: Path) -> bool:
    import json

    try:
        return "exact_duplicates" in json.loads((out / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def train_classifier(
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder (weights.npy + config.json).")],
    labelled: Annotated[list[str] | None, typer.Argument(help="JSONL files with text and label (good/bad, 1/0); "
                                                        "default: the registry's mc4-ja-labeled.")] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds for the printed metrics (0: none).")] = 5,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 8,
    ngrams: Annotated[str, typer.Option(help="Character n-gram sizes, comma separated.")] = "1,2,3",
    buckets: Annotated[int, typer.Option(help="Hashed feature buckets.")] = 1 << 18,
    seed: Annotated[int, typer.Option(help="Random seed (fold split, initialisation, order).")] = 0,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Folder of the shared data sets.")] = None,
) -> None:
    """Train the fastText-style quality classifier (hashed character n-grams, linear model).

    Prints cross-validated balanced accuracy, MCC and AUC, then trains on everything and saves the
    model (NumPy weights and JSON config; no pickles).

    Examples:
      kamado corpus train-classifier --out models/quality
      kamado corpus train-classifier labelled.jsonl more.jsonl --out models/quality --folds 10
    """
    from kamado import folders
    from kamado.catalog import resolve
    from kamado.corpus.steps.quality import ClassifierConfig, load_labelled, train_with_cv
    from kamado.ui import console, table

    folders.check_ours(out, "--out")  # before the training: a user's folder is never written into
    paths = [resolve(p, data_root) for p in (labelled or ["mc4-ja-labeled"])]
    texts, labels = load_labelled(paths)
    cfg = ClassifierConfig(ngrams=[int(x) for x in ngrams.split(",") if x.strip()], buckets=buckets,
                           epochs=epochs, seed=seed)
    rows_ = [["examples", len(texts)], ["good", int((labels == 1).sum())], ["bad", int((labels == 0).sum())]]
    model, cv = train_with_cv(texts, labels, cfg, folds, {"trained_on": [p.name for p in paths]})
    if cv is not None:
        rows_ += [[f"cv balanced accuracy ({folds} folds)", round(cv["balanced_accuracy"], 4)],
                  ["cv MCC (bad detection)", round(cv["mcc"], 4)], ["cv AUC", round(cv["auc"], 4)]]
    model.save(folders.mark(out, "quality classifier"))
    rows_.append(["model", str(out)])
    console.print(table("quality classifier", ["", "value"], rows_))
