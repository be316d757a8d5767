"""The data stage: pack the corpus stage's kept documents into per-source token files."""

from __future__ import annotations

from typing import Any

from kamado.data.config import PackConfig
from kamado.stage import StageContext


def run(cfg: PackConfig, ctx: StageContext) -> dict[str, Any]:
    """Tokenize ``ctx.input("corpus")`` with ``ctx.input("tokenizer")`` into ``ctx.out``; per-source token counts."""
    from kamado.corpus.docs import corpus_sources

    return pack_into(corpus_sources(ctx.input("corpus")), ctx.input("tokenizer"), cfg, ctx)


def pack_into(specs: list[Any], tokenizer: Any, cfg: PackConfig, ctx: StageContext, force: bool = False) -> dict:
    """Pack resolved inputs into ``ctx.out``; the pack is read back through :class:`PackArtifact` (so a
    pack its readers cannot open fails here, not in a later stage)."""
    from kamado.data.artifacts import PackArtifact
    from kamado.data.pack import pack
    from kamado.ui import progress

    with progress("packing", total=None, unit="jobs") as advance:
        counts = pack(specs, tokenizer, ctx.out, cfg, advance=advance, force=force)
    PackArtifact.open(ctx.out)
    return counts
