"""The data stage: pack the corpus stage's kept documents into per-source token files."""

from __future__ import annotations

from typing import Any

from kamado.data.config import PackConfig
from kamado.stage import StageContext


def run(cfg: PackConfig, ctx: StageContext) -> dict[str, Any]:
    """Tokenize ``ctx.input("corpus")`` with ``ctx.input("tokenizer")`` into ``ctx.out``; per-source token counts."""
    from kamado.corpus.docs import corpus_sources
    from kamado.data.pack import pack
    from kamado.ui import progress

    specs = corpus_sources(ctx.input("corpus"))
    with progress("packing", total=None, unit="jobs") as advance:
        return pack(specs, ctx.input("tokenizer"), ctx.out, cfg, advance=advance)
