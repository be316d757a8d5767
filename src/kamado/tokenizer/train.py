"""SentencePiece training on a mixture-weighted sample of clean documents, exported for Hugging Face.

The model is built to round-trip exactly: identity normalisation (no NFKC: full-width stays
full-width), no whitespace folding, no dummy prefix, ``\\n`` and ``\\t`` as their own pieces, digits split,
and byte fallback for every character outside the vocabulary (rare kanji, emoji). Unigram scores are
rounded to multiples of 1/64 so that SentencePiece (float32) and ``tokenizers`` (float64) pick the same
segmentation; the exported HF tokenizer gives the same ids as SentencePiece (see ``export.py``).
"""

from __future__ import annotations

import io
import os
import random
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.corpus.docs import InputSpec, iter_docs
from kamado.tokenizer.config import TokenizerConfig

SPECIALS = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}
USER_SYMBOLS = ["\n", "\t"]
# every printable ASCII character is a piece, so that the literal text "<unk>" or "<0x41>" is always
# cheaper as ordinary pieces than as the (down-weighted) control / byte pieces in the HF export
REQUIRED_CHARS = "".join(chr(c) for c in range(0x21, 0x7F))
SCORE_STEP = 64  # unigram scores are rounded to multiples of 1/SCORE_STEP (see module doc)
MAX_PIECE_CHARS = 2000  # training sentences are cut to this many characters


@dataclass
class Sample:
    """What the tokenizer is trained on, and the held-out text its statistics are measured on."""

    lines: list[str]
    chars: dict[str, int]  # source -> characters sampled for training
    available: dict[str, int]  # source -> characters available
    weights: dict[str, float]  # source -> normalised weight used
    langs: dict[str, str]  # source -> language
    heldout: dict[str, list[str]] = field(default_factory=dict)  # lang -> held-out documents
    errors: int = 0
    line_langs: list[str] = field(default_factory=list)  # the language of each of ``lines``


def _held_out(source: str, i: int, every: int) -> bool:
    return zlib.crc32(f"{source}:{i}".encode()) % every == 0


def resolve_weights(weights: dict[str, float] | None, sizes: dict[str, int], langs: dict[str, str],
                    what: str = "weights", empty: dict[str, str] | None = None) -> dict[str, float]:
    """Normalised per-source weights; keys are source names or languages (split by size within a language).

    ``None`` weights the sources by size. Unknown keys are an error that lists the sources. ``empty`` maps
    the sources that exist but hold no documents (left empty by the corpus filters) to their language: a
    positive weight on one of them, or on a language all of whose sources are empty, is an error naming it.
    """
    empty = {s: lg for s, lg in (empty or {}).items() if s not in sizes}
    if not sizes:
        if empty:
            raise KamadoError(f"no documents found in the inputs: every source is empty ({', '.join(empty)}); "
                              "the corpus filters rejected every document (see the corpus stage's stats.json)")
        raise KamadoError("no documents found in the inputs")
    if not weights:
        tot = sum(sizes.values()) or 1
        return {s: n / tot for s, n in sizes.items()}
    out: dict[str, float] = defaultdict(float)
    for key, w in weights.items():
        if w < 0:
            raise KamadoError(f"{what}: {key}={w} is negative")
        if key in sizes:
            out[key] += w
            continue
        if key in empty:
            if w > 0:
                raise KamadoError(f"{what}: {key}={w:g} names source {key!r}, which holds no documents (the corpus "
                                  "filters rejected all of them, or its input was unreadable: see the corpus "
                                  f"stage's {key}/clean/stats.json); drop it from {what} or fix the source")
            continue
        members = [s for s in sizes if langs.get(s) == key]
        gone = [s for s, lg in empty.items() if lg == key]
        if not members and gone:
            if w > 0:
                raise KamadoError(f"{what}: {key}={w:g}, but every {key!r} source holds no documents "
                                  f"({', '.join(gone)}: the corpus filters rejected all of them, or the input was "
                                  f"unreadable); drop {key!r} from {what} or fix the source")
            continue
        if not members:
            raise KamadoError(f"{what}: {key!r} is neither a source nor a language of the inputs "
                              f"(sources: {', '.join(f'{s} ({langs.get(s)})' for s in sizes)})")
        tot = sum(sizes[s] for s in members) or 1
        for s in members:
            out[s] += w * sizes[s] / tot
    total = sum(out.values())
    if total <= 0:
        raise KamadoError(f"{what}: weights sum to zero")
    return {s: out.get(s, 0.0) / total for s in sizes}


def collect_sample(specs: list[InputSpec], cfg: TokenizerConfig, seed: int = 1234) -> Sample:
    """Two passes over the inputs: sizes per source, then a weighted line sample plus held-out documents."""
    every = max(2, cfg.heldout_every)
    sizes: dict[str, int] = defaultdict(int)
    langs: dict[str, str] = {}
    errors: list[str] = []
    ndoc: dict[str, int] = defaultdict(int)
    unreadable: list[str] = []
    empty: dict[str, str] = {}
    for spec in specs:
        before = sum(sizes.values())
        for d in iter_docs(spec, errors, unreadable):
            langs.setdefault(d.source, d.lang)
            sizes[d.source] += len(d.text)
        if spec.force_source and spec.source and sum(sizes.values()) == before:
            empty[spec.source] = spec.lang or "?"
    if unreadable:
        raise KamadoError(f"every record of {len(unreadable)} input file(s) is an error: " + "; ".join(unreadable[:5]))
    sizes = dict(sizes)
    w = resolve_weights(cfg.weights, sizes, langs, "tokenizer.weights", empty)
    target = {s: w[s] * cfg.sample_chars for s in sizes}
    prob = {s: min(1.0, target[s] / max(1, sizes[s])) for s in sizes}
    rng = random.Random(seed)
    lines: list[str] = []
    line_langs: list[str] = []
    got: dict[str, int] = defaultdict(int)
    held: dict[str, list[str]] = defaultdict(list)
    held_chars: dict[str, int] = defaultdict(int)
    ndoc.clear()
    for spec in specs:
        for d in iter_docs(spec):
            i = ndoc[d.source]
            ndoc[d.source] += 1
            p = prob.get(d.source, 0.0)
            lang = langs.get(d.source, d.lang)
            for j, line in enumerate(d.text.split("\n")):
                if not line:
                    continue
                if _held_out(d.source, i * 100_003 + j, every):
                    if held_chars[lang] < cfg.heldout_chars:
                        held[lang].append(line)
                        held_chars[lang] += len(line)
                    continue
                if p <= 0 or (p < 1.0 and rng.random() >= p):
                    continue
                for k in range(0, len(line), MAX_PIECE_CHARS):
                    piece = line[k:k + MAX_PIECE_CHARS]
                    lines.append(piece)
                    line_langs.append(lang)
                    got[d.source] += len(piece)
    if not lines:
        raise KamadoError("the tokenizer sample is empty (inputs hold no text, or every weight is 0)")
    return Sample(lines=lines, chars=dict(got), available=sizes, weights=w, langs=langs, heldout=dict(held),
                  errors=len(errors), line_langs=line_langs)


def fit_characters(lines: list[str], cfg: TokenizerConfig) -> tuple[list[str], int]:
    """Drop the rarest characters from the training lines when they would not fit the vocabulary.

    SentencePiece needs one piece per covered character (coverage ≥ 0.98) plus the special, user and
    256 byte pieces; a small vocabulary on Japanese text (thousands of kanji) cannot hold them. Dropped
    characters never become pieces and are spelled with byte pieces, so the round-trip stays exact.
    Returns the lines and how many distinct characters were dropped.
    """
    from collections import Counter

    fixed = len(SPECIALS) + len(USER_SYMBOLS) + (256 if cfg.byte_fallback else 0)
    room = cfg.vocab_size - fixed - max(100, cfg.vocab_size // 4)  # keep a quarter for longer pieces
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(line)
    total = sum(counts.values())
    ranked = [c for c, _ in counts.most_common()]
    cum = needed = 0
    for c in ranked:  # characters SentencePiece keeps at the configured coverage
        if cum >= cfg.character_coverage * total:
            break
        cum += counts[c]
        needed += 1
    extra = len(set(REQUIRED_CHARS) - set(ranked[:needed]))
    if needed + extra <= room:
        return lines, 0
    keep = set(ranked[:max(1, room - len(REQUIRED_CHARS))]) | set(REQUIRED_CHARS)
    drop = {ord(c): None for c in ranked if c not in keep}
    out = [x for x in (line.translate(drop) for line in lines) if x]
    return out, len(drop)


def train_sentencepiece(lines: list[str], cfg: TokenizerConfig, seed: int = 1234,
                        log: Any = None, normal_form: str = "identity", scratch: Path | None = None) -> bytes:
    """Train a SentencePiece model on ``lines``; returns the serialised model (scores rounded).

    ``normal_form`` (:mod:`kamado.tokenizer.normal`) becomes the model's normalisation rule; its TSV is
    written into ``scratch`` (default: a temporary folder) and removed after training.
    """
    import tempfile

    import sentencepiece as spm

    from kamado.tokenizer.normal import write_rule_tsv

    lines, dropped = fit_characters(lines, cfg)
    if dropped and log:
        log(f"{dropped:,} rare characters left out of training so that single characters fit a "
            f"{cfg.vocab_size:,}-piece vocabulary (they are spelled with byte pieces)")
    buf = io.BytesIO()
    spm.set_random_generator_seed(seed)
    nthreads = cfg.num_threads or max(1, min(os.cpu_count() or 1, 16))
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        rule: dict[str, str] = ({"normalization_rule_name": "identity"} if normal_form == "identity" else
                                {"normalization_rule_tsv": str(write_rule_tsv(normal_form, Path(tmp) / "rule.tsv"))})
        _train_spm(spm, lines, buf, cfg, nthreads, rule)
    return round_scores(without_paths(buf.getvalue()))


def without_paths(model: bytes) -> bytes:
    """The model without the temporary rule file's path SentencePiece records in ``normalization_rule_tsv`` (the
    rule itself is in ``precompiled_charsmap``): the same training gives the same bytes in any folder."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(model)
    if not m.normalizer_spec.normalization_rule_tsv:
        return model
    m.normalizer_spec.ClearField("normalization_rule_tsv")
    return m.SerializeToString()


def _train_spm(spm: Any, lines: list[str], buf: io.BytesIO, cfg: TokenizerConfig, nthreads: int,
               rule: dict[str, str]) -> None:
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buf, vocab_size=cfg.vocab_size, model_type=cfg.model_type,
            character_coverage=cfg.character_coverage, byte_fallback=cfg.byte_fallback,
            split_digits=cfg.split_digits, remove_extra_whitespaces=False, **rule,
            add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_by_whitespace=True,
            user_defined_symbols=USER_SYMBOLS, required_chars=REQUIRED_CHARS, unk_id=0, bos_id=1, eos_id=2, pad_id=3,
            unk_piece=SPECIALS["unk"], bos_piece=SPECIALS["bos"], eos_piece=SPECIALS["eos"],
            pad_piece=SPECIALS["pad"], max_sentence_length=4 * MAX_PIECE_CHARS + 16, shuffle_input_sentence=True,
            input_sentence_size=cfg.max_sentences, num_threads=nthreads,
            train_extremely_large_corpus=False, minloglevel=2, hard_vocab_limit=True,
            seed_sentencepiece_size=cfg.seed_pieces, num_sub_iterations=cfg.sub_iterations,
        )
    except RuntimeError as e:
        msg = str(e)
        if "Vocabulary size" in msg or "vocab_size" in msg:
            raise KamadoError(f"SentencePiece cannot build a {cfg.vocab_size}-piece {cfg.model_type} vocabulary from "
                              f"this sample: {msg.strip().split(')', 1)[-1].strip()} (give more text, or a smaller "
                              "vocabulary)") from None
        raise KamadoError(f"SentencePiece training failed: {msg.strip()}") from None


def round_scores(model: bytes, step: int = SCORE_STEP) -> bytes:
    """Round the scores of normal pieces to multiples of ``1/step`` (exact in float32 and float64)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(model)
    if m.trainer_spec.model_type != pb.TrainerSpec.UNIGRAM:
        return model
    for p in m.pieces:
        if p.type == pb.ModelProto.SentencePiece.NORMAL:
            p.score = round(p.score * step) / step
    return m.SerializeToString()


def train_tokenizer(specs: list[InputSpec], cfg: TokenizerConfig, out: Path, seed: int = 1234,
                    log: Any = None) -> dict[str, Any]:
    """Sample, train, export an HF tokenizer dir into ``out`` and measure it; returns the counts."""
    from kamado.tokenizer.export import export_hf
    from kamado.tokenizer.normal import resolve
    from kamado.tokenizer.stats import measure

    form = resolve(cfg.normal_form, specs)
    t0 = time.perf_counter()
    sample = collect_sample(specs, cfg, seed)
    t1 = time.perf_counter()
    if log:
        log(f"sample: {sum(sample.chars.values()):,} chars in {len(sample.lines):,} lines from "
            f"{len(sample.chars)} sources ({t1 - t0:.1f}s); training {cfg.model_type} {cfg.vocab_size:,}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = train_sentencepiece(sample.lines, cfg, seed, log, normal_form=form, scratch=out)
    t2 = time.perf_counter()
    info = {"vocab_size": cfg.vocab_size, "model_type": cfg.model_type, "normal_form": form,
            "sample_chars": sample.chars, "available_chars": sample.available,
            "weights": {k: round(v, 6) for k, v in sample.weights.items()}, "langs": sample.langs,
            "config": cfg.model_dump(mode="json"), "seed": seed}
    export_hf(model, out, info)
    stats = measure(out, sample.heldout) if sample.heldout else {}
    t3 = time.perf_counter()
    counts: dict[str, Any] = {"vocab_size": cfg.vocab_size}
    for lang, st in sorted(stats.items(), key=lambda x: (x[0] != "ja", x[0])):
        counts[f"chars_per_token_{lang}"] = round(st["chars_per_token"], 4)
    counts |= {"train_s": round(t2 - t1, 2), "model_type": cfg.model_type, "normal_form": form,
               "sample_chars": sum(sample.chars.values()), "sample_lines": len(sample.lines)}
    for lang, st in sorted(stats.items()):
        counts[f"byte_fallback_rate_{lang}"] = round(st["byte_fallback_rate"], 6)
        counts[f"unk_rate_{lang}"] = round(st["unk_rate"], 6)
        counts[f"heldout_chars_{lang}"] = st["chars"]
    counts |= {"read_errors": sample.errors, "sample_s": round(t1 - t0, 2), "stats_s": round(t3 - t2, 2),
               "sp_model": "tokenizer.model",
               "sources": {s: {"lang": sample.langs.get(s), "weight": round(sample.weights[s], 6),
                               "sample_chars": sample.chars.get(s, 0), "available_chars": sample.available[s]}
                           for s in sample.available}}
    import json

    (out / "kamado_tokenizer.json").write_text(json.dumps(info | {"heldout_stats": stats}, ensure_ascii=False,
                                                          indent=2) + "\n", encoding="utf-8")
    return counts
