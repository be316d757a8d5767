"""Vectorized MinHash over character n-grams, LSH banding and connected components, all in NumPy.

Every function works on a whole batch of documents at once: the batch's text is one UTF-32 array,
the n-gram hashes of every document are computed in a handful of array operations, and signatures
come out as a ``(docs, num_perm)`` ``uint32`` matrix. There is no Python loop per document, per
n-gram or per permutation on the hot path.

Two signature schemes:

- ``oph`` (default): one-permutation hashing with optimal densification (Shrivastava 2017). Each
  n-gram is hashed once to 64 bits; the high bits pick one of ``num_perm`` bins, the low 32 bits are
  the value, and a bin keeps its minimum. Empty bins borrow the value of another bin chosen by a
  fixed hash sequence, so ``P[sig_a[i] == sig_b[i]] ≈ Jaccard(a, b)`` as with classic MinHash, at
  a cost that does not grow with ``num_perm``.
- ``classic``: ``num_perm`` independent multiply-shift hashes of every n-gram (what datasketch and
  rensa compute); slower, kept for comparison.

Text normalisation for deduplication (:func:`normalize`) is NFKC, lower case, and whitespace runs
collapsed to one space: it never strips diacritics, so が and か, ぱ and は stay different n-grams.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from kamado.corpus.text.normalize import nfkc

_MASK32 = np.uint64(0xFFFFFFFF)
_POLY = np.uint64(0x9E3779B97F4A7C15)
EMPTY = np.uint32(0xFFFFFFFF)


def normalize(text: str) -> str:
    """Text as compared by deduplication: NFKC, lower case, collapsed whitespace (diacritics kept).

    NFKC is :func:`kamado.corpus.text.normalize.nfkc`: exactly ``unicodedata.normalize("NFKC", …)``, but it
    normalizes only the runs of characters that can change (CPython's NFKC of a whole Japanese text is ~9x slower).
    """
    return " ".join(nfkc(text).lower().split())


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a ``uint64`` array (wrapping arithmetic)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def shingle_hashes(texts: list[str], ngram: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every character n-gram of every text, and the n-gram count per text.

    Texts shorter than ``ngram`` (but not empty) count as one n-gram (padded with NUL); empty texts
    have none. Returns ``(hashes uint64[M], counts int64[len(texts)])``; hashes are in text order.
    """
    n = ngram
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    short = (lens > 0) & (lens < n)
    if short.any():
        texts = [t + "\x00" * (n - len(t)) if 0 < len(t) < n else t for t in texts]
        lens = np.where(short, n, lens)
    counts = np.where(lens >= n, lens - n + 1, 0)
    joined = "".join(texts)
    if not joined:
        return np.zeros(0, np.uint64), counts
    cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    m = len(cp) - n + 1
    if m <= 0:
        return np.zeros(0, np.uint64), counts
    h = cp[:m].copy()
    for k in range(1, n):
        h *= _POLY
        h += cp[k : k + m]
    # drop the n-grams that straddle two texts: the last n-1 start positions of every text
    ends = np.cumsum(lens)
    nonempty = ends[lens > 0]
    bad = (nonempty[:, None] - np.arange(1, n, dtype=np.int64)[None, :]).ravel()
    bad = bad[bad < m]
    if bad.size:
        keep = np.ones(m, dtype=bool)
        keep[bad] = False
        h = h[keep]
    h ^= np.uint64(seed * 0x632BE59BD9B4E019 & 0xFFFFFFFFFFFFFFFF)
    return _mix64(h), counts


def _densify(sig: np.ndarray, filled: np.ndarray, seed: int, max_rounds: int = 512) -> None:
    """Fill empty bins in place (optimal densification): bin i of a set takes the value of the first
    non-empty bin among ``g(i, 1), g(i, 2), …``, where ``g`` is the same for every set."""
    k = sig.shape[1]
    rows, cols = np.nonzero(~filled)
    if rows.size == 0:
        return
    has_any = filled.any(axis=1)
    ok_rows = has_any[rows]
    rows, cols = rows[ok_rows], cols[ok_rows]
    src = sig.copy()
    attempt = 1
    while rows.size and attempt <= max_rounds:
        key = cols.astype(np.uint64) * np.uint64(0x100000001B3) + np.uint64(attempt * 0x9E3779B1 + seed)
        cand = (_mix64(key) % np.uint64(k)).astype(np.int64)
        hit = filled[rows, cand]
        sig[rows[hit], cols[hit]] = src[rows[hit], cand[hit]]
        rows, cols = rows[~hit], cols[~hit]
        attempt += 1
    if rows.size:  # very sparse sets: fall back to the next non-empty bin to the right (circular)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            nz = np.flatnonzero(np.roll(filled[r], -c - 1))
            sig[r, c] = src[r, (c + 1 + nz[0]) % k]


def oph_signatures(hashes: np.ndarray, counts: np.ndarray, num_perm: int, seed: int = 0) -> np.ndarray:
    """One-permutation MinHash signatures ``uint32[len(counts), num_perm]`` from :func:`shingle_hashes`.

    Rows of texts without n-grams are all ``EMPTY``.
    """
    d = len(counts)
    sig = np.full(d * num_perm, EMPTY, dtype=np.uint32)
    if hashes.size:
        doc = np.repeat(np.arange(d, dtype=np.uint64), counts)
        b = ((hashes >> np.uint64(32)) * np.uint64(num_perm)) >> np.uint64(32)
        slot = (doc * np.uint64(num_perm) + b).astype(np.intp)
        np.minimum.at(sig, slot, (hashes & _MASK32).astype(np.uint32))
        filled = np.zeros(d * num_perm, dtype=bool)
        filled[slot] = True
    else:
        filled = np.zeros(d * num_perm, dtype=bool)
    sig = sig.reshape(d, num_perm)
    _densify(sig, filled.reshape(d, num_perm), seed)
    return sig


def _classic_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 0x5EED)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def classic_signatures(hashes: np.ndarray, counts: np.ndarray, num_perm: int, seed: int = 0,
                       chunk: int = 1 << 22) -> np.ndarray:
    """Classic MinHash: ``num_perm`` multiply-shift hashes ``(a*x + b) >> 32`` of each 32-bit n-gram
    hash, minimum per text. Vectorized per chunk of texts (a ``(n-grams, num_perm)`` matrix)."""
    d = len(counts)
    sig = np.full((d, num_perm), EMPTY, dtype=np.uint32)
    a, b = _classic_params(num_perm, seed)
    x = hashes & _MASK32
    offs = np.concatenate([[0], np.cumsum(counts)])
    start = 0
    while start < d:
        stop = start + 1
        while stop < d and offs[stop + 1] - offs[start] <= max(1, chunk // num_perm):
            stop += 1
        lo, hi = offs[start], offs[stop]
        if hi > lo:
            vals = ((x[lo:hi, None] * a[None, :] + b[None, :]) >> np.uint64(32)).astype(np.uint32)
            c = counts[start:stop]
            nz = np.flatnonzero(c)
            red = np.minimum.reduceat(vals, (offs[start:stop][nz] - lo).astype(np.intp), axis=0)
            sig[start + nz] = red
        start = stop
    return sig


def signatures(texts: list[str], num_perm: int = 128, ngram: int = 5, seed: int = 0,
               scheme: str = "oph") -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of (already normalised) texts and a mask of texts that have any n-gram."""
    hashes, counts = shingle_hashes(texts, ngram, seed)
    if scheme == "oph":
        sig = oph_signatures(hashes, counts, num_perm, seed)
    elif scheme == "classic":
        sig = classic_signatures(hashes, counts, num_perm, seed)
    else:
        raise ValueError(f"unknown MinHash scheme {scheme!r} (oph or classic)")
    return sig, counts > 0


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit hash per LSH band: ``uint64[docs, bands]`` from the first ``bands*rows`` columns."""
    d = sig.shape[0]
    s = sig[:, : bands * rows].reshape(d, bands, rows).astype(np.uint64)
    h = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0xD6E8FEB86659FD93),
                        (d, bands)).copy()
    for j in range(rows):
        h ^= s[:, :, j]
        h *= _POLY
        h ^= h >> np.uint64(29)
    return _mix64(h)


@functools.cache
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows (``bands*rows <= num_perm``) minimising false positives + false negatives
    around ``threshold`` (equal weights, the rule datasketch uses), all pairs at once."""
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64)
    xs = np.linspace(0.0, 1.0, 1001)
    p = 1.0 - (1.0 - xs[None, :] ** pairs[:, 1:2]) ** pairs[:, 0:1]
    lo = xs <= threshold
    dx = xs[1] - xs[0]
    err = 0.5 * (p[:, lo].sum(axis=1) * dx) + 0.5 * ((1.0 - p[:, ~lo]).sum(axis=1) * dx)
    b, r = pairs[int(np.argmin(err))]
    return int(b), int(r)


def min_labels(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected components of the graph with edges ``u[i]–v[i]`` over ``0..n-1``; each node gets the
    smallest node of its component (hook to the smaller root, then pointer jumping, until stable)."""
    parent = np.arange(n, dtype=np.int64)
    if len(u) == 0:
        return parent
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    while True:
        pu, pv = parent[u], parent[v]
        diff = pu != pv
        if not diff.any():
            return parent
        pu, pv = pu[diff], pv[diff]
        lo, hi = np.minimum(pu, pv), np.maximum(pu, pv)
        np.minimum.at(parent, hi, lo)
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt


@dataclass(frozen=True)
class LshSpec:
    """Resolved MinHash + LSH parameters (:meth:`kamado.corpus.dedup.settings.DedupSettings.lsh`: bands and rows
    filled in)."""

    num_perm: int
    bands: int
    rows: int
    threshold: float
    ngram: int
    seed: int
    scheme: str


def _pad(texts: list[str], n: int) -> list[str]:
    """Texts shorter than ``n`` (but not empty) padded with NUL to one n-gram, as :func:`shingle_hashes` takes them."""
    return [t + "\x00" * (n - len(t)) if 0 < len(t) < n else t for t in texts]


def _gram_sets(texts: list[str], ngram: int) -> list[np.ndarray] | None:
    """The set of character n-grams of each (padded) text as its sorted distinct exact ``uint64`` keys; ``None``
    when the texts' alphabet is too large for ``ngram`` characters to fit in 64 bits.

    A key is the n-gram written in base A, A the number of distinct characters in ``texts`` (each character is
    its rank among them): a bijection, so equal keys are equal n-grams. Nothing is hashed. Keys are built and
    sorted one text at a time, so the arrays stay in cache."""
    n = ngram
    if not texts:
        return []
    cp = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    present = np.zeros(0x110000, dtype=bool)
    present[cp] = True
    rank = np.cumsum(present, dtype=np.int32)
    alphabet = int(rank[-1])
    if alphabet**n >= 1 << 64:
        return None
    r = (rank[cp] - 1).astype(np.uint64)
    base = np.uint64(alphabet)
    sets: list[np.ndarray] = []
    start = 0
    for t in texts:
        seg = r[start : start + len(t)]
        start += len(t)
        m = len(seg) - n + 1
        if m <= 0:
            sets.append(np.zeros(0, np.uint64))
            continue
        key = seg[:m].copy()
        for k in range(1, n):
            key *= base
            key += seg[k : k + m]
        key.sort()
        new = np.empty(m, dtype=bool)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
        sets.append(key[new])
    return sets


def ngram_jaccard(texts: list[str], a: np.ndarray, b: np.ndarray, ngram: int = 5) -> np.ndarray:
    """Exact Jaccard similarity of the character n-gram sets of ``texts[a[i]]`` and ``texts[b[i]]``
    (float64, one per pair; 1.0 when both sets are empty). Texts are taken as given (normalise them first);
    n-grams and the padding of short texts are as in :func:`shingle_hashes`.

    Each text's set is its sorted distinct exact n-gram keys (:func:`_gram_sets`, one small sort per text); a
    pair's intersection is the number of keys the merge of its two sets holds twice.
    When the texts' alphabet is too large for one key, the pairs are split in halves (and a single such pair
    uses Python sets).
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    out = np.ones(len(a), dtype=np.float64)
    if not len(a):
        return out
    used = sorted(set(a.tolist()) | set(b.tolist()))
    local = {d: k for k, d in enumerate(used)}
    sub = _pad([texts[d] for d in used], ngram)
    sets = _gram_sets(sub, ngram)
    if sets is None:
        if len(a) > 1:
            h = len(a) // 2
            return np.concatenate([ngram_jaccard(texts, a[:h], b[:h], ngram), ngram_jaccard(texts, a[h:], b[h:], ngram)])
        n = ngram
        ga, gb = ({t[i : i + n] for i in range(len(t) - n + 1)} for t in (sub[local[int(a[0])]], sub[local[int(b[0])]]))
        union = len(ga | gb)
        out[0] = len(ga & gb) / union if union else 1.0
        return out
    for p, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        sx, sy = sets[local[x]], sets[local[y]]
        both = np.sort(np.concatenate([sx, sy]), kind="stable")  # a merge of two sorted runs (timsort)
        inter = int(np.count_nonzero(both[1:] == both[:-1]))
        union = len(sx) + len(sy) - inter
        out[p] = inter / union if union else 1.0
    return out
