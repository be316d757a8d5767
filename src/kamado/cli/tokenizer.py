"""``kamado tokenizer``: train a SentencePiece tokenizer on the corpus and compare tokenizers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kamado.cli.options import option
from kamado.config import KamadoError, parse_assignments
from kamado.stage import DEFAULT_SEED
from kamado.tokenizer.config import TokenizerConfig

app = typer.Typer(no_args_is_help=True)


def parse_weights(spec: str | None) -> dict[str, float] | None:
    """``ja=0.6,en=0.4`` -> ``{"ja": 0.6, "en": 0.4}``."""
    return parse_assignments(spec, "--weights", float, "ja=0.6,en=0.4") or None


@app.command("train")
def train_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Corpus folders, shard files/folders, data-set names, NAME=PATH.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Tokenizer folder to write (HF format).")],
    vocab_size: int = option(TokenizerConfig, "vocab_size"),
    model_type: str = option(TokenizerConfig, "model_type"),
    weights: str | None = option(TokenizerConfig, "weights", note="Here: ja=0.6,en=0.4."),
    sample_chars: int = option(TokenizerConfig, "sample_chars"),
    seed: Annotated[int, typer.Option(help="Sampling and training seed.")] = DEFAULT_SEED,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Data root for data-set names.")] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="Encoding of JSONL/text input files: utf-8 "
                                                 "(default; a BOM and CRLF are handled), cp932 (Shift-JIS), euc_jp.")] = None,
    normal_form: str = option(TokenizerConfig, "normal_form"),
) -> None:
    """Train SentencePiece (byte fallback, split digits, exact round-trip) on a weighted sample; export for HF.

    Examples:
      kamado tokenizer train runs/tiny/corpus --vocab-size 8000 --out tok8k
      kamado tokenizer train ja-wikipedia aozora wikitext2 --weights ja=0.6,en=0.4 --vocab-size 32000 --out tok32k
      kamado tokenizer train ja=corpus/ja en=corpus/en --model-type bpe --vocab-size 16000 --out tokbpe
    """
    import time

    from kamado.corpus.docs import resolve_inputs
    from kamado.manifest import write_manifest
    from kamado.tokenizer.train import train_tokenizer
    from kamado.ui import console, table

    if model_type not in ("unigram", "bpe"):
        raise KamadoError(f"--model-type {model_type!r}: expected unigram or bpe")
    cfg = TokenizerConfig(vocab_size=vocab_size, model_type=model_type, sample_chars=sample_chars,  # type: ignore[arg-type]
                          weights=parse_weights(weights), normal_form=normal_form)  # type: ignore[arg-type]
    specs = resolve_inputs(inputs, data_root, encoding)
    t0 = time.perf_counter()
    counts = train_tokenizer(specs, cfg, out, seed=seed, log=lambda m: console.print(f"  {m}"))
    wall = time.perf_counter() - t0
    write_manifest(out, stage="tokenizer", config=cfg.model_dump(mode="json") | {"seed": seed, "inputs": inputs},
                   counts=counts, timings={"wall_s": round(wall, 3)})
    rows = [[s, v["lang"], v["weight"], v["sample_chars"], v["available_chars"]] for s, v in counts["sources"].items()]
    console.print(table(f"tokenizer {out} ({model_type}, {vocab_size:,} pieces, normal form {counts['normal_form']}, "
                        f"trained in {counts['train_s']:.1f}s)",
                        ["source", "lang", "weight", "sample chars", "available"], rows))
    langs = sorted({k.rsplit("_", 1)[1] for k in counts if k.startswith("chars_per_token_")})
    if langs:
        console.print(table("held-out text", ["lang", "chars/token", "byte fallback", "unk"],
                            [[lg, counts[f"chars_per_token_{lg}"], counts[f"byte_fallback_rate_{lg}"],
                              counts[f"unk_rate_{lg}"]] for lg in langs]))


@app.command("stats")
def stats_cmd(
    tokenizers: Annotated[list[Path], typer.Argument(help="One or two tokenizer folders to compare.")],
    text: Annotated[list[str] | None, typer.Option("--text", help="Held-out text: shard files, data-set names, "
                                                   "NAME=PATH (repeatable).")] = None,
    max_chars: Annotated[int, typer.Option("--max-chars", help="At most this many characters per language.")] = 500_000,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Data root for data-set names.")] = None,
) -> None:
    """Characters per token, byte-fallback and unknown-token rates per language; side by side for two tokenizers.

    Text comes from documents with a ``text`` field or plain text files (``kamado tokenizer train`` itself
    reports the same figures on text it held out of training).

    Examples:
      kamado tokenizer stats tok8k --text fineweb2-ja --text gutenberg-holmes
      kamado tokenizer stats tok8k tok32k --text ja-wikipedia --text wikitext2
    """
    from collections import defaultdict

    from kamado.corpus.docs import iter_docs, resolve_inputs
    from kamado.tokenizer.stats import measure
    from kamado.ui import console, table

    if not 1 <= len(tokenizers) <= 2:
        raise KamadoError("give one or two tokenizer folders")
    if not text:
        raise KamadoError("--text is required: held-out text to measure on (files or data-set names)")
    by_lang: dict[str, list[str]] = defaultdict(list)
    size: dict[str, int] = defaultdict(int)
    for spec in resolve_inputs(text, data_root):
        for d in iter_docs(spec):
            if size[d.lang] < max_chars:
                piece = d.text[: max_chars - size[d.lang]]
                by_lang[d.lang].append(piece)
                size[d.lang] += len(piece)
    results = [measure(t, dict(by_lang)) for t in tokenizers]
    cols = ["lang", "chars"]
    for t in tokenizers:
        cols += [f"{t.name} chars/tok", f"{t.name} bytes %", f"{t.name} unk %"]
    if len(tokenizers) == 2:
        cols.append("tokens B/A")
    rows = []
    for lang in sorted(by_lang):
        row: list = [lang, size[lang]]
        for r in results:
            st = r.get(lang, {})
            row += [st.get("chars_per_token", 0.0), 100 * st.get("byte_fallback_rate", 0.0), 100 * st.get("unk_rate", 0.0)]
        if len(results) == 2:
            row.append(results[1][lang]["tokens"] / max(1, results[0][lang]["tokens"]))
        rows.append(row)
    console.print(table("tokenizer stats (held-out text)", cols, rows))
