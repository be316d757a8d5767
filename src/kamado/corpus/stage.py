"""The corpus stage of ``kamado run``: clean (and deduplicate) every source into its own folder.

Layout of the stage folder::

    <source>/clean/    kept/, rejected/, errors.jsonl, stats.json   (kamado corpus clean)
    <source>/dedup/    kept/, rejected/, stats.json                 (kamado corpus dedup, when enabled)
    sources.json       [{"name", "lang", "kept": "<source>/dedup/kept"}, ...]  (paths relative to here)

An interrupted stage resumes: cleaning redoes only unfinished shards, finished dedups are kept.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.corpus.config import ChainConfig, CorpusConfig, SourceSpec, load_chain
from kamado.manifest import write_json_atomic
from kamado.stage import StageContext


def chain_for(cfg: CorpusConfig, src: SourceSpec, ctx: StageContext) -> tuple[ChainConfig, Path | None]:
    """The filter chain of one source: ``default`` picks the chain of the source's language."""
    name = cfg.chain
    if name == "default":
        name = {"ja": "default-ja", "en": "default-en"}.get(src.lang, "default")
    base = ctx.recipe_dir
    return load_chain(name, Path(base) if base else Path.cwd())


def _dedup_fn() -> Any:
    try:
        from kamado.corpus.dedup import run_dedup
    except ImportError:  # pragma: no cover - the dedup module ships with kamado
        return None
    return run_dedup


def run(cfg: CorpusConfig, ctx: StageContext) -> dict:
    """Clean each source (``max_docs`` honoured), deduplicate its kept documents, write sources.json."""
    from kamado import registry
    from kamado.corpus.executors import clean

    names = [s.name for s in cfg.sources]
    if len(set(names)) != len(names):
        raise KamadoError(f"corpus.sources: duplicate source names in {names}")
    out = Path(ctx.out)
    counts: dict[str, Any] = {"input": 0, "kept": 0, "rejected": 0, "errors": 0, "final_docs": 0}
    per_source: dict[str, Any] = {}
    listing = []
    for src in cfg.sources:
        t0 = time.perf_counter()
        inputs = [registry.resolve(n, ctx.data_root, ctx.recipe_dir) for n in src.inputs]
        chain, base = chain_for(cfg, src, ctx)
        sdir = out / src.name
        stats = clean(inputs, sdir / "clean", chain, executor=cfg.executor, workers=cfg.workers,
                      ray_address=cfg.ray_address, data_root=ctx.data_root, base_dir=base, source=src.name,
                      max_docs=src.max_docs, shard_bytes=cfg.shard_mb << 20, text_doc_bytes=cfg.text_doc_kb * 1000,
                      overwrite=True, quiet=ctx.quiet)
        kept_rel = f"{src.name}/clean/kept"
        final = stats["kept"]
        dedup_removed = 0
        if cfg.dedup and stats["kept"] > 0:
            run_dedup = _dedup_fn()
            if run_dedup is None:
                raise KamadoError("corpus.dedup is true but kamado.corpus.dedup.run_dedup is not available; "
                                  "set corpus.dedup: false")
            marker = sdir / ".dedup-done.json"
            if marker.is_file():
                dstats = json.loads(marker.read_text(encoding="utf-8"))
            else:
                kept_files = sorted((sdir / "clean" / "kept").glob("*.jsonl.gz"))
                dstats = run_dedup(kept_files, sdir / "dedup", executor=cfg.executor, workers=cfg.workers,
                                   ray_address=cfg.ray_address)
                dstats = {k: v for k, v in dstats.items() if isinstance(v, int | float | str)}
                write_json_atomic(marker, dstats)
            final = int(dstats.get("kept", final))
            dedup_removed = int(dstats.get("rejected", 0))
            kept_rel = f"{src.name}/dedup/kept"
        listing.append({"name": src.name, "lang": src.lang, "kept": kept_rel})
        for k in ("input", "kept", "rejected", "errors"):
            counts[k] += int(stats[k])
        counts["final_docs"] += final
        per_source.update({
            f"{src.name}.input": stats["input"], f"{src.name}.kept": stats["kept"],
            f"{src.name}.rejected": stats["rejected"], f"{src.name}.errors": stats["errors"],
            f"{src.name}.dedup_removed": dedup_removed, f"{src.name}.final_docs": final,
            f"{src.name}.chars_in": stats["chars_in"], f"{src.name}.chars_kept": stats["chars_kept"],
            f"{src.name}.mb_in": round(stats["text_bytes_in"] / 1e6, 3),
            f"{src.name}.seconds": round(time.perf_counter() - t0, 2),
            f"{src.name}.chain": chain.name,
        })
    write_json_atomic(out / "sources.json", listing)
    return {**counts, **per_source}
