"""The tokenizer stage: SentencePiece on a weighted sample of the corpus stage's kept documents."""

from __future__ import annotations

from typing import Any

from kamado.stage import StageContext
from kamado.tokenizer.config import TokenizerConfig


def run(cfg: TokenizerConfig, ctx: StageContext) -> dict[str, Any]:
    """Train into ``ctx.out`` (the HF tokenizer folder itself); returns vocab size and chars/token per language."""
    from kamado.corpus.docs import corpus_sources

    return train_on(corpus_sources(ctx.input("corpus")), cfg, ctx)


def train_on(specs: list[Any], cfg: TokenizerConfig, ctx: StageContext) -> dict[str, Any]:
    """Train on resolved inputs into ``ctx.out``; the counts go through :class:`TokenizerCounts`, so what
    the stage writes is what :class:`TokenizerArtifact` reads."""
    from kamado.tokenizer.artifacts import TokenizerCounts
    from kamado.tokenizer.train import train_tokenizer
    from kamado.ui import console

    log = None if ctx.quiet else (lambda m: console.print(f"  {m}"))
    if cfg.extend is not None:
        from kamado.tokenizer.extend import base_model_path, before_after_rows, extend_tokenizer
        from kamado.ui import table

        base = base_model_path(cfg.extend.base, ctx.recipe_dir)
        counts = TokenizerCounts.from_counts(extend_tokenizer(specs, cfg, ctx.out, base, seed=ctx.seed,
                                                              log=log)).to_counts()
        if not ctx.quiet:
            console.print(table(f"tokenizer extended: {counts['base_vocab_size']:,} + {counts['added_pieces']:,} "
                                "pieces (held-out text)", ["lang", "chars/token before", "after", "change"],
                                before_after_rows(counts)))
        return counts
    return TokenizerCounts.from_counts(train_tokenizer(specs, cfg, ctx.out, seed=ctx.seed, log=log)).to_counts()
