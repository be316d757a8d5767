"""The unigram floor: token frequencies of a training mixture, the simplest model a trained LM must beat.

A language model that scores no better than ``p(token)`` estimated from its own training tokens has learned
nothing beyond frequencies. :func:`mixture_unigram` fits that model on a pack's train split, each source
weighted by its token share averaged over the mixture's stages (what training actually drew), with
add-``alpha`` smoothing so that every piece of the vocabulary has a probability. The pretrain stage saves
it beside the exported model (``kamado_unigram.npy``); evaluation reports ``unigram_bpc`` next to ``bpc``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kamado.data.config import MixtureConfig

UNIGRAM = "kamado_unigram.npy"  # in a model folder, beside model.safetensors
MAX_COUNT = 200_000_000  # tokens counted per source at most (evenly spaced blocks beyond that)


def average_shares(mix: MixtureConfig, sizes: dict[str, int], langs: dict[str, str]) -> dict[str, float]:
    """Each source's token share averaged over training progress (stages weighted by their length)."""
    from kamado.data.mixture import stage_weights

    stages = stage_weights(mix, sizes, langs)
    ends = [s for s, _ in stages[1:]] + [1.0]
    out: dict[str, float] = {}
    for (start, w), end in zip(stages, ends, strict=True):
        for src, share in w.items():
            out[src] = out.get(src, 0.0) + share * max(0.0, end - start)
    tot = sum(out.values()) or 1.0
    return {k: v / tot for k, v in out.items()}


def source_counts(arr: np.ndarray, vocab: int, max_count: int = MAX_COUNT) -> np.ndarray:
    """Token counts of one token array (all of it, or ``max_count`` tokens in 64 evenly spaced blocks)."""
    if len(arr) <= max_count:
        return np.bincount(np.asarray(arr), minlength=vocab)[:vocab].astype(np.float64)
    out = np.zeros(vocab, dtype=np.float64)
    block = max_count // 64
    for s in np.linspace(0, len(arr) - block, 64).astype(np.int64):
        out += np.bincount(np.asarray(arr[s:s + block]), minlength=vocab)[:vocab]
    return out


def mixture_unigram(pack_dir: Path, mix: MixtureConfig, vocab: int, alpha: float = 0.5) -> tuple[np.ndarray, dict]:
    """(probabilities over the vocabulary, what they were fit on) for a pack's train split and a mixture."""
    pack_dir = Path(pack_dir)
    meta = json.loads((pack_dir / "pack.json").read_text(encoding="utf-8"))
    dtype = np.dtype(meta.get("dtype", "uint16"))
    sizes: dict[str, int] = {}
    langs: dict[str, str] = {}
    arrays: dict[str, Any] = {}
    for name, src in meta.get("sources", {}).items():
        rel = src.get("train")
        if not rel or not (pack_dir / rel).is_file() or (pack_dir / rel).stat().st_size == 0:
            continue
        arrays[name] = np.memmap(pack_dir / rel, dtype=dtype, mode="r")
        sizes[name] = len(arrays[name])
        langs[name] = src.get("lang") or "unk"
    shares = average_shares(mix, sizes, langs)
    probs = np.zeros(vocab, dtype=np.float64)
    for name, arr in arrays.items():
        if shares.get(name, 0.0) <= 0:
            continue
        c = source_counts(arr, vocab)
        probs += shares[name] * (c + alpha) / (c.sum() + alpha * vocab)
    probs /= probs.sum()
    return probs, {"shares": {k: round(v, 6) for k, v in shares.items()}, "alpha": alpha, "vocab": vocab,
                   "train_tokens": sizes}


def save_unigram(model_dir: Path, probs: np.ndarray, info: dict) -> Path:
    """Write ``kamado_unigram.npy`` (and ``kamado_unigram.json``, what it was fit on) into a model folder."""
    model_dir = Path(model_dir)
    np.save(model_dir / UNIGRAM, probs.astype(np.float64))
    (model_dir / (UNIGRAM[: -len(".npy")] + ".json")).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return model_dir / UNIGRAM
