"""Reference-model perplexity in the CCNet manner: a character n-gram LM trained on clean text.

The model is an interpolated Kneser-Ney character n-gram LM (default order 5) kept entirely in
sorted NumPy arrays of 64-bit n-gram hashes: training hashes every n-gram of every order in a few
vectorized passes and counts with ``np.unique``; scoring looks up all positions of a batch of
documents at once with ``np.searchsorted``. Text is normalised as for deduplication (NFKC, lower
case, collapsed whitespace). A document's score is its per-character perplexity; CCNet-style buckets
``head`` / ``middle`` / ``tail`` cut it at two thresholds (default: the 90th percentile of held-out
reference paragraphs, and twice that).

A model folder holds ``lm-<order>-{keys,vals}.npy`` arrays and ``config.json``; nothing is pickled.
:class:`PerplexityStep` is a pipeline filter that stores ``perplexity`` and ``ppl_bucket`` in the
document's metadata and can drop documents above a bucket or a perplexity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kamado.config import KamadoError
from kamado.corpus.dedup.minhash import _mix64, normalize

_P = np.uint64(0x100000001B3)
BOS = "\x02"
VOCAB = 1 << 16  # character vocabulary assumed for unseen characters


def _ends_hashes(texts: list[str], order: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Hashes of the k-gram ending at every position, k = 1..order, over the BOS-padded texts.

    Returns ``(hashes[k-1] uint64[L], real mask bool[L], doc index int64[L])``.
    """
    pad = BOS * (order - 1)
    joined = "".join(pad + t for t in texts)
    lens = np.array([len(t) + order - 1 for t in texts], dtype=np.int64)
    cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64) if joined else \
        np.zeros(0, np.uint64)
    n = len(cp)
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), lens)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(texts) else np.zeros(0, np.int64)
    pos_in_doc = np.arange(n, dtype=np.int64) - starts[doc] if n else np.zeros(0, np.int64)
    real = pos_in_doc >= order - 1
    out = []
    h = cp.copy()
    mult = 1
    for k in range(1, order + 1):
        if k > 1:
            mult = mult * int(_P) & 0xFFFFFFFFFFFFFFFF
            h = h.copy()
            h[k - 1:] += cp[: n - k + 1] * np.uint64(mult)
        out.append(_mix64(h ^ np.uint64(k * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF)))
    return out, real, doc


def _lookup(keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into ``keys`` (sorted) and whether ``query`` was found."""
    if len(keys) == 0:
        return np.zeros(len(query), np.int64), np.zeros(len(query), bool)
    i = np.searchsorted(keys, query)
    i = np.minimum(i, len(keys) - 1)
    return i, keys[i] == query


@dataclass
class NgramLM:
    """Interpolated Kneser-Ney character LM over hashed n-grams."""

    order: int = 5
    grams: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # per order: keys, counts
    ctx: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # keys, total, types
    discounts: list[float] = field(default_factory=list)
    unigram_total: float = 0.0
    meta: dict = field(default_factory=dict)

    @classmethod
    def train(cls, texts: list[str], order: int = 5) -> NgramLM:
        """Count n-grams of normalised ``texts`` (Kneser-Ney continuation counts below the top order)."""
        norm = [normalize(t) for t in texts]
        hs, real, _ = _ends_hashes(norm, order)
        lm = cls(order=order)
        pos = np.flatnonzero(real)
        for k in range(1, order + 1):
            g = hs[k - 1][pos]
            if k == order:
                keys, first, counts = np.unique(g, return_index=True, return_counts=True)
                rep = pos[first]
            else:  # continuation count: distinct (k+1)-grams ending in this k-gram
                up, upfirst = np.unique(hs[k][pos], return_index=True)
                suffix = hs[k - 1][pos[upfirst]]
                keys, inv, counts = np.unique(suffix, return_inverse=True, return_counts=True)
                rep = np.zeros(len(keys), np.int64)
                rep[inv] = pos[upfirst]
            counts = counts.astype(np.float64)
            n1, n2 = float((counts == 1).sum()), float((counts == 2).sum())
            lm.discounts.append(n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5)
            lm.grams.append((keys, counts))
            if k == 1:
                lm.unigram_total = float(counts.sum())
                lm.ctx.append((np.zeros(0, np.uint64), np.zeros(0), np.zeros(0)))
            else:
                c = hs[k - 2][rep - 1]
                ck, cinv = np.unique(c, return_inverse=True)
                lm.ctx.append((ck, np.bincount(cinv, counts), np.bincount(cinv).astype(np.float64)))
        return lm

    def char_logprobs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Natural-log probability of every character of the normalised texts, and its text index."""
        norm = [normalize(t) for t in texts]
        hs, real, doc = _ends_hashes(norm, self.order)
        pos = np.flatnonzero(real)
        keys, counts = self.grams[0]
        i, f = _lookup(keys, hs[0][pos])
        p = (np.where(f, counts[i], 0.0) + 0.5) / (self.unigram_total + 0.5 * VOCAB)
        for k in range(2, self.order + 1):
            ck, total, types = self.ctx[k - 1]
            j, fc = _lookup(ck, hs[k - 2][pos - 1])
            keys, counts = self.grams[k - 1]
            i, f = _lookup(keys, hs[k - 1][pos])
            c = np.where(f, counts[i], 0.0)
            d = self.discounts[k - 1]
            tot = np.where(fc, total[j], 1.0)
            new = (np.maximum(c - d, 0.0) + d * np.where(fc, types[j], 0.0) * p) / tot
            p = np.where(fc, new, p)
        return np.log(p), doc[pos]

    def perplexity(self, texts: list[str]) -> np.ndarray:
        """Per-character perplexity of each text (``inf`` for empty texts)."""
        if not texts:
            return np.zeros(0)
        lp, doc = self.char_logprobs(texts)
        n = np.bincount(doc, minlength=len(texts))
        s = np.bincount(doc, lp, minlength=len(texts))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n > 0, np.exp(-s / np.maximum(n, 1)), np.inf)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for k, ((gk, gc), (ck, ct, cn)) in enumerate(zip(self.grams, self.ctx, strict=True), 1):
            np.save(folder / f"lm-{k}-keys.npy", gk)
            np.save(folder / f"lm-{k}-vals.npy", gc.astype(np.float32))
            np.save(folder / f"lm-{k}-ctx-keys.npy", ck)
            np.save(folder / f"lm-{k}-ctx-vals.npy", np.stack([ct, cn]).astype(np.float32))
        with open(folder / "config.json", "w", encoding="utf-8") as f:
            json.dump({"kind": "kamado-char-ngram-lm", "version": 1, "order": self.order,
                       "discounts": self.discounts, "unigram_total": self.unigram_total, **self.meta}, f, indent=2)

    @classmethod
    def load(cls, folder: Path) -> NgramLM:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            lm = cls(order=int(meta.pop("order")), discounts=list(meta.pop("discounts")),
                     unigram_total=float(meta.pop("unigram_total")))
            for k in range(1, lm.order + 1):
                ld = {"allow_pickle": False}
                cv = np.load(folder / f"lm-{k}-ctx-vals.npy", **ld).astype(np.float64)
                lm.grams.append((np.load(folder / f"lm-{k}-keys.npy", **ld),
                                 np.load(folder / f"lm-{k}-vals.npy", **ld).astype(np.float64)))
                lm.ctx.append((np.load(folder / f"lm-{k}-ctx-keys.npy", **ld), cv[0], cv[1]))
        except (FileNotFoundError, KeyError) as e:
            raise KamadoError(f"{folder}: not a kamado n-gram LM folder ({e})") from None
        meta.pop("kind", None)
        meta.pop("version", None)
        lm.meta = meta
        return lm

    def buckets(self, ppl: np.ndarray, head_max: float | None = None,
                middle_max: float | None = None) -> np.ndarray:
        """``head`` / ``middle`` / ``tail`` for each perplexity."""
        h = head_max or float(self.meta.get("head_max", np.inf))
        m = middle_max or float(self.meta.get("middle_max", np.inf))
        return np.where(ppl <= h, "head", np.where(ppl <= m, "middle", "tail"))


def paragraphs(text: str, min_chars: int = 50) -> list[str]:
    """Blank-line separated paragraphs of at least ``min_chars`` characters."""
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) >= min_chars]


def train_reference(source: str = "ja-wikipedia", order: int = 5, data_root: Path | None = None,
                    holdout: float = 0.05, seed: int = 0) -> NgramLM:
    """Train on the paragraphs of a registry data set (``{text}`` JSONL, .gz allowed); a held-out
    share of documents calibrates the bucket thresholds (head: 90th percentile, middle: twice that)."""
    from kamado.catalog import resolve
    from kamado.corpus.io.documents import Document
    from kamado.corpus.io.readers import read_shard

    path = resolve(source, data_root)
    docs = [d.text for d in read_shard(path) if isinstance(d, Document)]
    rng = np.random.default_rng(seed)
    held = rng.random(len(docs)) < holdout
    train_p = [p for d, h in zip(docs, held, strict=True) if not h for p in paragraphs(d)]
    test_p = [p for d, h in zip(docs, held, strict=True) if h for p in paragraphs(d)]
    lm = NgramLM.train(train_p, order)
    ppl = lm.perplexity(test_p) if test_p else np.array([np.nan])
    q90 = float(np.quantile(ppl, 0.9))
    lm.meta.update({"trained_on": source, "train_paragraphs": len(train_p), "heldout_paragraphs": len(test_p),
                    "heldout_median_ppl": float(np.median(ppl)), "head_max": q90, "middle_max": 2 * q90})
    return lm


_MODELS: dict[str, Any] = {}


def reference_lm(model: str | None = None, data_root: Path | None = None, cache: Path | None = None) -> NgramLM:
    """A saved LM folder, or the default Wikipedia LM (trained once and cached under ``cache``)."""
    import os

    key = f"{model}|{data_root}"
    if key in _MODELS:
        return _MODELS[key]
    if model:
        lm = NgramLM.load(Path(model))
    else:
        base = cache or Path(os.environ.get("KAMADO_CACHE", Path.home() / ".cache" / "kamado"))
        folder = Path(base) / "lm" / "ja-wikipedia-5"
        if (folder / "config.json").is_file():
            lm = NgramLM.load(folder)
        else:
            lm = train_reference("ja-wikipedia", 5, data_root)
            tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
            lm.save(tmp)
            try:
                os.replace(tmp, folder)
            except OSError:  # another process won the race
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
    _MODELS[key] = lm
    return lm


def _register_steps() -> None:
    from typing import Literal

    from kamado.corpus.steps.base import Analysis, Filter, StepParams, fmt, register

    class PerplexityParams(StepParams):
        model: str | None = None  # LM folder; default: char 5-gram trained on ja-wikipedia (cached)
        head_max: float | None = None  # bucket thresholds (default: the model's calibration)
        middle_max: float | None = None
        max_bucket: Literal["head", "middle", "tail"] = "tail"  # reject documents in worse buckets
        max_perplexity: float | None = None

    rank = {"head": 0, "middle": 1, "tail": 2}

    @register("perplexity")
    class PerplexityFilter(Filter):
        """Per-character perplexity under the reference LM (``meta.perplexity``, ``meta.ppl_bucket``)."""

        Params = PerplexityParams

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            model = str(self.env.resolve(self.p.model)) if self.p.model else None
            self.lm = reference_lm(model, self.env.data_root)

        def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
            ppl = float(self.lm.perplexity([a.text])[0])
            b = str(self.lm.buckets(np.array([ppl]), self.p.head_max, self.p.middle_max)[0])
            ppl = round(ppl, 3) if np.isfinite(ppl) else 1e9
            if doc is not None and isinstance(getattr(doc, "meta", None), dict):
                doc.meta["perplexity"] = ppl
                doc.meta["ppl_bucket"] = b
            return {"perplexity": ppl, "bucket": b}

        def decide(self, m: dict[str, Any]) -> str | None:
            if rank[m["bucket"]] > rank[self.p.max_bucket]:
                return f"ppl_bucket: {m['bucket']} (perplexity {fmt(m['perplexity'])})"
            if self.p.max_perplexity is not None and m["perplexity"] > self.p.max_perplexity:
                return f"high_perplexity: {fmt(m['perplexity'])} > {fmt(self.p.max_perplexity)}"
            return None


_register_steps()
