"""The corpus stage of ``kamado run``: clean (and deduplicate) every source into its own folder.

Layout of the stage folder::

    <source>/clean/    kept/, rejected/, errors.jsonl, stats.json   (kamado corpus clean)
    <source>/dedup/    kept/, rejected/, stats.json                 (kamado corpus dedup, when enabled)
    sources.json       [{"name", "lang", "kept": "<source>/dedup/kept", "normal_form"}, ...]  (paths relative)

An interrupted stage resumes: cleaning redoes only unfinished shards, finished dedups are kept.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kamado.corpus.artifacts import CorpusArtifact, CorpusCounts, CorpusSource, SourceCounts
from kamado.corpus.config import ChainConfig, CorpusConfig, SourceSpec, load_chain
from kamado.manifest import write_json_atomic
from kamado.stage import StageContext


def chain_for(cfg: CorpusConfig, src: SourceSpec, ctx: StageContext) -> tuple[ChainConfig, Path | None]:
    """The filter chain of one source: its own ``chain``, else the corpus chain; ``default`` picks the chain
    of the source's language."""
    name = src.chain or cfg.chain
    if name == "default":
        name = {"ja": "default-ja", "en": "default-en"}.get(src.lang, "default")
    base = ctx.recipe_dir
    return load_chain(name, Path(base) if base else Path.cwd())


def empty_reason(stats: dict, dedup_removed: int = 0) -> str:
    """Why a source kept nothing: its counts and top rejection reasons (``step/reason N``), unreadable files."""
    from kamado.corpus.jobs.clean import all_error_files

    reasons: dict[str, int] = {}
    for st in stats.get("steps", [])[1:]:
        for r, n in (st.get("reasons") or {}).items():
            key = f"{st['name']}/{r}" if r != st["name"] else r
            reasons[key] = reasons.get(key, 0) + int(n)
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
    why = (f"input {stats.get('input', 0):,}: rejected {stats.get('rejected', 0):,}, errors {stats.get('errors', 0):,}"
           + (f", duplicates {dedup_removed:,}" if dedup_removed else ""))
    if top:
        why += "; top rejection reasons: " + ", ".join(f"{k} {v:,}" for k, v in top)
    bad = all_error_files(stats, stats.get("_out", "")) if stats.get("_out") else []
    if bad:
        why += "; unreadable: " + "; ".join(bad[:3])
    return why


def warn_empty(name: str, stats: dict, dedup_removed: int, clean_dir: Path) -> None:
    """The warning for a source that the filters (or unreadable input) left without documents."""
    from kamado.ui import console

    console.print(f"[yellow]warning:[/] corpus: source {name!r} kept no documents "
                  f"({empty_reason(stats | {'_out': str(clean_dir)}, dedup_removed)}); "
                  f"see {clean_dir / 'stats.json'} and `kamado corpus inspect {clean_dir}`", highlight=False,
                  soft_wrap=True)


def _dedup_fn() -> Any:
    try:
        from kamado.corpus.dedup.run import run_dedup
    except ImportError:  # pragma: no cover - the dedup module ships with kamado
        return None
    return run_dedup


def run(cfg: CorpusConfig, ctx: StageContext) -> dict:
    """Clean each source (``max_docs`` honoured), deduplicate its kept documents, write sources.json."""
    from kamado import catalog
    from kamado.corpus.jobs.clean import run_clean

    out = Path(ctx.out)
    counts = CorpusCounts()
    listing: list[CorpusSource] = []
    for src in cfg.sources:
        t0 = time.perf_counter()
        inputs = [catalog.resolve(n, ctx.data_root, ctx.recipe_dir) for n in src.inputs]
        chain, base = chain_for(cfg, src, ctx)
        sdir = out / src.name
        stats = run_clean(inputs, sdir / "clean", chain, executor=cfg.executor, workers=cfg.workers,
                      ray_address=cfg.ray_address, data_root=ctx.data_root, base_dir=base, source=src.name,
                      max_docs=src.max_docs, shard_bytes=cfg.shard_mb << 20, text_doc_bytes=cfg.text_doc_kb * 1000,
                      overwrite=True, quiet=ctx.quiet, format=cfg.shard_format, encoding=src.encoding,
                      split_bytes=cfg.split_mb << 20)
        kept_rel = f"{src.name}/clean/kept"
        final = stats["kept"]
        dedup_removed = 0
        if (cfg.dedup.enabled if src.dedup is None else src.dedup) and stats["kept"] > 0:
            from kamado.corpus.dedup.run import run_dedup

            marker = sdir / ".dedup-done.json"
            settings = cfg.dedup.settings()
            asked = {**settings.model_dump(mode="json"), "format": cfg.shard_format}
            dstats = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
            if dstats is None or dstats.get("_settings", asked) != asked:
                from kamado.corpus.io.readers import shard_files

                kept_files = shard_files(sdir / "clean" / "kept")
                dstats = run_dedup(kept_files, sdir / "dedup", settings, executor=cfg.executor, workers=cfg.workers,
                                   ray_address=cfg.ray_address, format=cfg.shard_format)
                dstats = {k: v for k, v in dstats.items() if isinstance(v, int | float | str)}
                write_json_atomic(marker, dstats | {"_settings": asked})
            final = int(dstats.get("kept", final))
            dedup_removed = int(dstats.get("rejected", 0))
            kept_rel = f"{src.name}/dedup/kept"
        if final == 0:
            warn_empty(src.name, stats, dedup_removed, sdir / "clean")
        listing.append(CorpusSource(src.name, src.lang, kept_rel, chain.normal_form()))
        counts.add(src.name, SourceCounts(
            input=int(stats["input"]), kept=int(stats["kept"]), rejected=int(stats["rejected"]),
            errors=int(stats["errors"]), dedup_removed=dedup_removed, final_docs=final,
            chars_in=stats["chars_in"], chars_kept=stats["chars_kept"], mb_in=round(stats["text_bytes_in"] / 1e6, 3),
            seconds=round(time.perf_counter() - t0, 2), chain=chain.name))
    CorpusArtifact.write_sources(out, listing)
    return counts.to_counts()
