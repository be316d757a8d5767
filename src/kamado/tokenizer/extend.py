"""Extend an existing SentencePiece tokenizer with new pieces learnt on the tokenizer text (vocabulary expansion).

``tokenizer.extend: {base: PATH, add: N}`` samples the recipe's tokenizer text exactly as training does
(:func:`kamado.tokenizer.train.collect_sample`), normalises it with the base model's own normaliser, trains a
helper SentencePiece model of the base's type on it, and appends the N best pieces of that model that the base
lacks to a copy of the base ``ModelProto``. Every base piece keeps its id, type and score (so its relative score
order), the special and byte pieces stay, and the normaliser spec (normal form, whitespace options) is the base's
byte for byte.

Scores of the appended pieces:
- unigram: the helper model's log-probability, shifted by the median difference between base and helper scores
  on the pieces both hold (so the two scales agree and Viterbi picks the new pieces where the helper model would),
  rounded to 1/64 like every kamado score (``train.round_scores``);
- BPE: below every base score, in the helper model's merge order (a piece's parts come before it there, so every
  appended piece can be built by merges).

The helper is trained on the lines of one language of that text (``tokenizer.extend.lang``, default ``ja``), and its
new pieces are ranked by the tokens they would save on it. N is exact: pieces the base already holds are skipped;
when the text yields fewer than N new pieces (after one retry with a larger helper vocabulary) the extension is
refused, naming ``tokenizer.extend.add``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.tokenizer.config import TokenizerConfig

SETTING = "tokenizer.extend"


def base_model_path(base: str | Path, recipe_dir: Path | None = None) -> Path:
    """The base's ``tokenizer.model`` (``base`` is a tokenizer folder or a ``.model`` file; relative paths are
    taken from the recipe's folder). A missing one is an error naming ``tokenizer.extend.base``."""
    p = Path(base).expanduser()
    if not p.is_absolute() and recipe_dir is not None:
        p = recipe_dir / p
    f = p / "tokenizer.model" if p.is_dir() else p
    if not f.is_file():
        raise KamadoError(f"{SETTING}.base: {f} does not exist (a SentencePiece tokenizer folder with "
                          "tokenizer.model, or a .model file)")
    return f


def _proto(model: bytes) -> Any:
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(model)
    return m


def normalise_lines(base: bytes, lines: list[str]) -> list[str]:
    """``lines`` as the base model normalises them (its charsmap and whitespace rules), spaces kept as spaces."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=base)
    out = [sp.normalize(x).replace("\u2581", " ") for x in lines]
    return [x for x in out if x.strip()]


def new_pieces(base: bytes, helper: bytes) -> list[tuple[str, float]]:
    """The helper model's normal pieces the base lacks, ranked by the tokens they save (best first), with their
    helper scores.

    A piece's saving is its helper probability (``exp(score)``: how often it occurs) times the tokens the base
    spends on it less one; BPE pieces keep the helper's merge order (a merge needs its parts first).
    """
    import math

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = _proto(base)
    have = {p.piece for p in m.pieces}
    normal = pb.ModelProto.SentencePiece.NORMAL
    cands = [(p.piece, p.score) for p in _proto(helper).pieces if p.type == normal and p.piece not in have]
    if m.trainer_spec.model_type != pb.TrainerSpec.UNIGRAM:
        return cands
    sp = spm.SentencePieceProcessor(model_proto=base)
    saving = {piece: math.exp(score) * (len(sp.encode(piece.replace("\u2581", " "))) - 1) for piece, score in cands}
    return sorted(cands, key=lambda c: -saving[c[0]])  # stable: ties keep the helper's order


def append_pieces(base: bytes, helper: bytes, add: int) -> bytes:
    """The base model with the ``add`` best new pieces of ``helper`` appended (see the module doc for scores)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    from kamado.tokenizer.train import SCORE_STEP

    m, h = _proto(base), _proto(helper)
    cands = new_pieces(base, helper)
    if len(cands) < add:
        raise KamadoError(f"{SETTING}.add: the tokenizer text yields only {len(cands):,} pieces the base lacks, "
                          f"{add:,} asked for (lower {SETTING}.add, or give more text: tokenizer.sample_chars)")
    cands = cands[:add]
    normal = pb.ModelProto.SentencePiece.NORMAL
    if m.trainer_spec.model_type == pb.TrainerSpec.UNIGRAM:
        hs = {p.piece: p.score for p in h.pieces if p.type == normal}
        diffs = [p.score - hs[p.piece] for p in m.pieces if p.type == normal and p.piece in hs]
        shift = statistics.median(diffs) if diffs else 0.0
        scores = [round((s + shift) * SCORE_STEP) / SCORE_STEP for _, s in cands]
    else:  # BPE: merges of the new pieces after every base merge, in the helper's order
        low = min((p.score for p in m.pieces if p.type == normal), default=0.0)
        scores = [low - 1.0 - i for i in range(len(cands))]
    for (piece, _), score in zip(cands, scores, strict=True):
        p = m.pieces.add()
        p.piece, p.score, p.type = piece, score, normal
    m.trainer_spec.vocab_size = len(m.pieces)
    return m.SerializeToString()


def extend_model(base: bytes, lines: list[str], add: int, cfg: TokenizerConfig, seed: int = 1234, log: Any = None,
                 scratch: Path | None = None) -> bytes:
    """``base`` with ``add`` new pieces learnt on ``lines`` (raw text; normalised here with the base's rules).

    The helper model has ``2 × add`` pieces more than the base (room to rank candidates; once more if the text
    still yields fewer than ``add`` new ones).
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    from kamado.tokenizer.train import train_sentencepiece

    if add == 0:
        return base
    m = _proto(base)
    kind = {pb.TrainerSpec.UNIGRAM: "unigram", pb.TrainerSpec.BPE: "bpe"}.get(m.trainer_spec.model_type)
    if kind is None:
        raise KamadoError(f"{SETTING}.base: a {pb.TrainerSpec.ModelType.Name(m.trainer_spec.model_type)} "
                          "SentencePiece model; only unigram and BPE models can be extended")
    text = normalise_lines(base, lines)
    if not text:
        raise KamadoError(f"{SETTING}: no tokenizer text to learn new pieces on (check {SETTING}.lang)")
    size = len(m.pieces) + 2 * add
    for attempt in range(2):
        hcfg = cfg.model_copy(update={"vocab_size": size, "model_type": kind,
                                      "byte_fallback": m.trainer_spec.byte_fallback,
                                      "split_digits": m.trainer_spec.split_digits})
        if log:
            log(f"helper {kind} model of {size:,} pieces on {len(text):,} normalised lines")
        try:
            helper = train_sentencepiece(text, hcfg, seed, log, normal_form="identity", scratch=scratch)
        except KamadoError as e:
            raise KamadoError(f"{SETTING}.add: {add:,} new pieces need a helper vocabulary of {size:,} pieces, "
                              f"more than the tokenizer text supports ({e}); lower {SETTING}.add or give more text "
                              "(tokenizer.sample_chars)") from None
        found = len(new_pieces(base, helper))
        if found >= add or attempt == 1:
            break
        size += 2 * (add - found)  # the helper shares many pieces with the base: ask for more room once
    return append_pieces(base, helper, add)


def base_info(base_file: Path) -> dict[str, Any]:
    """What the base folder's kamado_tokenizer.json says ({} for tokenizers not made by kamado)."""
    from kamado.tokenizer.artifacts import INFO

    f = base_file.parent / INFO
    try:
        d = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    except (OSError, json.JSONDecodeError):
        d = {}
    return d if isinstance(d, dict) else {}


def _normal_form(base: bytes, info: dict[str, Any]) -> str:
    if info.get("normal_form"):
        return str(info["normal_form"])
    name = _proto(base).normalizer_spec.name
    return "identity" if name == "identity" else f"base:{name}"


def extend_tokenizer(specs: list[Any], cfg: TokenizerConfig, out: Path, base_file: Path, seed: int = 1234,
                     log: Any = None) -> dict[str, Any]:
    """Sample, extend, export the HF tokenizer folder into ``out`` and measure base and extended tokenizers on the
    held-out text; returns the stage's counts (``chars_per_token_*`` after, ``base_chars_per_token_*`` before)."""
    from kamado.tokenizer.export import export_hf
    from kamado.tokenizer.stats import measure
    from kamado.tokenizer.train import collect_sample

    assert cfg.extend is not None
    add = cfg.extend.add
    base = base_file.read_bytes()
    try:
        nbase = len(_proto(base).pieces)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError
        raise KamadoError(f"{SETTING}.base: {base_file} is not a SentencePiece model ({e})") from None
    form = _normal_form(base, base_info(base_file))
    t0 = time.perf_counter()
    sample = collect_sample(specs, cfg, seed)
    t1 = time.perf_counter()
    if log:
        log(f"sample: {sum(sample.chars.values()):,} chars in {len(sample.lines):,} lines; extending {base_file} "
            f"({nbase:,} pieces) by {add:,} learnt on {cfg.extend.lang or 'all'} lines")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lang = cfg.extend.lang
    lines = sample.lines if lang is None else [x for x, lg in zip(sample.lines, sample.line_langs, strict=True)
                                               if lg == lang]
    if add and not lines:
        raise KamadoError(f"{SETTING}.lang: no {lang!r} lines in the tokenizer text (its languages: "
                          f"{', '.join(sorted(set(sample.line_langs)))}); set another language, or null for all")
    model = extend_model(base, lines, add, cfg, seed, log, scratch=out)
    t2 = time.perf_counter()
    kind = "unigram" if _proto(model).trainer_spec.model_type == 1 else "bpe"  # TrainerSpec.UNIGRAM
    info = {"vocab_size": nbase + add, "model_type": kind, "normal_form": form,
            "extend": {"base": str(base_file), "base_vocab_size": nbase, "added": add, "lang": lang},
            "sample_chars": sample.chars, "available_chars": sample.available,
            "weights": {k: round(v, 6) for k, v in sample.weights.items()}, "langs": sample.langs,
            "config": cfg.model_dump(mode="json"), "seed": seed}
    export_hf(model, out, info)
    after = measure(out, sample.heldout) if sample.heldout else {}
    before: dict[str, dict[str, Any]] = {}
    if sample.heldout:
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            before = measure(export_hf(base, Path(tmp)), sample.heldout)
    t3 = time.perf_counter()
    counts: dict[str, Any] = {"vocab_size": nbase + add}
    order = sorted(after, key=lambda lg: (lg != "ja", lg))
    for lg in order:
        counts[f"chars_per_token_{lg}"] = round(after[lg]["chars_per_token"], 4)
    counts |= {"train_s": round(t2 - t1, 2), "model_type": kind, "normal_form": form,
               "sample_chars": sum(sample.chars.values()), "sample_lines": len(sample.lines)}
    for lg in sorted(after):
        counts[f"byte_fallback_rate_{lg}"] = round(after[lg]["byte_fallback_rate"], 6)
        counts[f"unk_rate_{lg}"] = round(after[lg]["unk_rate"], 6)
        counts[f"heldout_chars_{lg}"] = after[lg]["chars"]
    counts |= {"read_errors": sample.errors, "sample_s": round(t1 - t0, 2), "stats_s": round(t3 - t2, 2),
               "sp_model": "tokenizer.model", "base_vocab_size": nbase, "added_pieces": add}
    for lg in order:
        if lg in before:
            counts[f"base_chars_per_token_{lg}"] = round(before[lg]["chars_per_token"], 4)
    counts["sources"] = {s: {"lang": sample.langs.get(s), "weight": round(sample.weights[s], 6),
                             "sample_chars": sample.chars.get(s, 0), "available_chars": sample.available[s]}
                         for s in sample.available}
    (out / "kamado_tokenizer.json").write_text(json.dumps(info | {"heldout_stats": after, "base_heldout_stats": before},
                                                          ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return counts


def before_after_rows(counts: dict[str, Any]) -> list[list[Any]]:
    """[lang, chars/token before, after, change %] for the languages both were measured on."""
    rows = []
    for k, v in counts.items():
        if k.startswith("base_chars_per_token_"):
            lg = k[len("base_chars_per_token_"):]
            after = counts.get(f"chars_per_token_{lg}")
            if after is not None and v:
                rows.append([lg, v, after, f"{100 * (after - v) / v:+.1f}%"])
    return rows
