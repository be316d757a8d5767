"""Exact and near-duplicate (MinHash LSH) removal over document shards, locally or on Ray.

Three phases, each deterministic:

1. **sketch** (parallel, one task per input shard): read the shard, normalise every document
   (:func:`kamado.corpus.dedup.minhash.normalize`), hash it (BLAKE2b-128, for exact dedup) and compute its
   MinHash signature and LSH band hashes in vectorized batches. Everything is spilled to
   ``OUT/_work/`` as ``.npy`` files (signatures ``uint32[docs, num_perm]``, band hashes
   ``uint64[bands, docs]``), so memory stays flat however many documents there are.
2. **cluster** (driver, vectorized): documents are numbered in input order (shards sorted as
   :func:`kamado.corpus.io.readers.list_inputs` gives them, then line order). Exact duplicates are grouped by
   hash; among the remaining documents, one band at a time is loaded and sorted, every document in an
   LSH bucket is linked to the bucket's first document, candidate links are verified (below), and
   connected components are found with a vectorized union-find.
3. **write** (parallel, one task per shard): stream the shard's documents, already serialized in phase 1
   (``sNNNNN.docs.jsonl``: one canonical JSON line per document, so nothing is parsed or encoded twice),
   into ``kept/`` and ``rejected/``; compression happens in the task (see :class:`kamado.corpus.io.writers.ShardWriter`:
   ``jsonl.gz`` at gzip level 1 by default, ``jsonl.zst`` or ``parquet`` by ``format``).

**Keep rule**: in every cluster the document that comes first in input order (shard, then line) is
kept; every other member is rejected with ``rejected_by`` (``exact_dedup`` or ``minhash_dedup``),
a ``reason`` and ``duplicate_of`` (the id of the kept document; for an exact copy, the id of the first
document with the same normalised text). Output files and ``stats.json`` are byte-identical for every
executor and worker count.

Executors (:mod:`kamado.executor`): ``local`` runs the per-shard tasks in a process pool of ``workers``
(in-process for one); ``ray`` runs them as Ray tasks on a local cluster (``num_cpus=workers``) or on the
cluster at ``ray_address`` / ``$RAY_ADDRESS``. Across machines the input shards and ``OUT`` must be on storage
every node sees (the tasks write their spill files and output shards there).

LSH bands and rows default to the split that best separates ``threshold − lsh_margin`` (0.2), so
pairs at the threshold become candidates with high probability (18×7 bands for t = 0.8 and 128
permutations: 98.6 % at Jaccard 0.8, 13 % at 0.5); verification then removes the false ones.

**Verification** (``verify``) decides each candidate pair at the declared threshold ``t``. With σ = √(t(1−t)/num_perm),
the standard error of the signature estimate at ``t``:

- ``exact`` (default): a pair whose signature estimate is ≥ ``t + kσ`` is a duplicate, one ≤ ``t − kσ`` is not
  (k = ``exact_sigmas``, 2), and every pair in between is decided by the exact Jaccard of the two documents'
  character n-gram sets (of the normalised text, the n-grams MinHash hashes): a duplicate iff it is ≥ ``t``.
  Only the documents of those ambiguous pairs are read back, by byte offset, from the phase-1 spill
  (``sNNNNN.docs.jsonl`` at the offsets in ``.off.npy``), a bucket head once for all its pairs, and their n-gram
  sets are compared exactly (:func:`kamado.corpus.dedup.minhash.ngram_jaccard`: no hashing). At 128 permutations
  and t = 0.8 (σ = 0.035) the estimate alone decides a pair wrongly with probability ≤ 2.3 % at J = t exactly,
  ≤ 1.3 % at J = t ± 0.01, ≤ 0.4 % from ±0.03 and ≤ 0.1 % from ±0.05 (normal approximation); k = 3 makes these
  0.14 %, 0.07 %, 0.02 % and ~0, for about twice the exact work (1,148 pairs instead of 603 on the corpus-compat
  input, where that costs the whole job ~0.45 CPU-s more). An ambiguous pair whose documents are already in one
  cluster through accepted links is not read (it cannot change a decision). ``stats.json`` counts the pairs
  checked exactly (``verified_exactly``), those accepted (``accepted_exactly``) and those skipped as already in
  one cluster (``already_linked``).
- ``signature``: estimate ≥ ``t − 2σ`` (0.729 at t = 0.8): no text is read, recall at ``t`` is kept, but pairs down
  to J ≈ 0.7 are removed.
- ``none``: every LSH candidate is a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import ValidationError

from kamado import folders
from kamado.config import KamadoError, format_validation_error
from kamado.corpus.dedup.minhash import (
    LshSpec,
    band_hashes,
    min_labels,
    ngram_jaccard,
    normalize,
    signatures,
)
from kamado.corpus.dedup.settings import DedupSettings
from kamado.corpus.io.documents import ReadError, dumps
from kamado.corpus.io.readers import list_inputs, read_shard
from kamado.corpus.io.writers import COMMAND_FORMAT, ShardWriter, shard_format
from kamado.executor import Executor

KEEP, EXACT, NEAR = 0, 1, 2
STEP_NAMES = {EXACT: "exact_dedup", NEAR: "minhash_dedup"}


_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks below 256 MB in the heap (``mallopt``) instead of returning them to the
    OS, once per process. Batch loops that allocate and free the same few MB of arrays over and over then
    reuse pages instead of faulting fresh ones in: on the dedup job that cut the system CPU time ~4x.
    A no-op where there is no glibc."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD: blocks below this come from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to this much freed memory at the heap top
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------------------------
# phase 1: sketch one shard


def _exact_hashes(texts: list[str]) -> np.ndarray:
    raw = b"".join(hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts)
    return np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2) if texts else np.zeros((0, 2), np.uint64)


def sketch_shard(idx: int, path: str, work: str, settings: dict) -> dict:
    """Phase 1 for one shard, streamed batch by batch to files under ``work`` (memory stays flat):
    ``sNNNNN.ids.jsonl``, ``.docs.jsonl`` (each document as the JSON line phase 3 writes), ``.off.npy``
    (int64[n + 1], where each line starts in it), ``.exact.npy`` (uint64[n, 2]), ``.has.npy``, ``.sig.u32`` (raw uint32[n, num_perm]) and one ``.bandBBB.u64`` file per
    LSH band (raw uint64[n])."""
    keep_freed_memory()
    s = DedupSettings.model_validate(settings)
    spec = s.lsh()
    base = Path(work) / f"s{idx:05d}"
    errors: list[dict] = []
    exact_parts: list[np.ndarray] = []
    has_parts: list[np.ndarray] = []
    batch: list[str] = []
    chars = nbytes = n = 0
    line_ends = array("q")
    pos = 0
    ids_f = open(f"{base}.ids.jsonl", "w", encoding="utf-8")
    docs_f = open(f"{base}.docs.jsonl", "wb")
    sig_f = open(f"{base}.sig.u32", "wb") if s.near else None
    band_f = [open(f"{base}.band{j:03d}.u64", "wb") for j in range(spec.bands)] if s.near else []

    def flush() -> None:
        nonlocal batch, chars
        if not batch:
            return
        exact_parts.append(_exact_hashes(batch))
        if s.near:
            sig, has = signatures(batch, spec.num_perm, spec.ngram, spec.seed, spec.scheme)
            has_parts.append(has)
            assert sig_f is not None
            sig_f.write(sig.tobytes())
            bh = band_hashes(sig, spec.bands, spec.rows)
            for j, f in enumerate(band_f):
                f.write(np.ascontiguousarray(bh[:, j]).tobytes())
        batch, chars = [], 0

    try:
        for rec in read_shard(Path(path)):
            if isinstance(rec, ReadError):
                errors.append(rec.to_json())
                continue
            ids_f.write(json.dumps(rec.id, ensure_ascii=False) + "\n")
            line = dumps(rec.to_json()).encode("utf-8") + b"\n"
            docs_f.write(line)
            pos += len(line)
            line_ends.append(pos)
            n += 1
            nbytes += len(rec.text.encode("utf-8"))
            t = normalize(rec.text)
            batch.append(t)
            chars += len(t)
            if chars >= s.batch_chars:
                flush()
        flush()
    finally:
        for f in [ids_f, docs_f, *([sig_f] if sig_f else []), *band_f]:
            f.close()
    np.save(f"{base}.off.npy", np.concatenate([[0], np.frombuffer(line_ends, dtype=np.int64)]).astype(np.int64))
    np.save(f"{base}.exact.npy", np.concatenate(exact_parts) if exact_parts else np.zeros((0, 2), np.uint64))
    np.save(f"{base}.has.npy", np.concatenate(has_parts) if has_parts else np.zeros(0, bool))
    return {"docs": n, "errors": errors, "bytes": nbytes}


def _raw(path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only memory map of a raw array file (an empty array for zero rows)."""
    if shape[0] == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


# ---------------------------------------------------------------------------------------------
# phase 2: cluster


def _exact_groups(exact: np.ndarray) -> np.ndarray:
    """For every document, the ordinal of the first document with the same hash (itself if first)."""
    n = len(exact)
    rep = np.arange(n, dtype=np.int64)
    if n == 0:
        return rep
    order = np.lexsort((exact[:, 1], exact[:, 0]))  # stable: ties stay in input order
    e = exact[order]
    start = np.ones(n, dtype=bool)
    start[1:] = np.any(e[1:] != e[:-1], axis=1)
    head = order[np.flatnonzero(start)][np.cumsum(start) - 1]
    rep[order] = head
    return rep


class _Signatures:
    """Random access to the spilled signatures by global ordinal (memory-mapped, shard by shard)."""

    def __init__(self, work: Path, offsets: np.ndarray, num_perm: int) -> None:
        self.offsets = offsets
        self.maps = [_raw(work / f"s{i:05d}.sig.u32", np.uint32, (int(offsets[i + 1] - offsets[i]), num_perm))
                     for i in range(len(offsets) - 1)]

    def rows(self, ords: np.ndarray) -> np.ndarray:
        shard = np.searchsorted(self.offsets, ords, side="right") - 1
        out = np.empty((len(ords), self.maps[0].shape[1] if self.maps else 0), dtype=np.uint32)
        for s in np.unique(shard):
            m = shard == s
            local = ords[m] - self.offsets[s]
            order = np.argsort(local)
            rows = np.asarray(self.maps[s][local[order]])
            tmp = np.empty_like(rows)
            tmp[order] = rows
            out[m] = tmp
        return out


class DocTexts(Protocol):
    """Normalised texts of documents by ordinal, and a cheap estimate of their sizes (for batching)."""

    def __call__(self, ords: np.ndarray) -> list[str]: ...

    def sizes(self, ords: np.ndarray) -> np.ndarray: ...


class _MemTexts:
    """:class:`DocTexts` over normalised texts in memory."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def __call__(self, ords: np.ndarray) -> list[str]:
        return [self.texts[i] for i in ords.tolist()]

    def sizes(self, ords: np.ndarray) -> np.ndarray:
        return np.fromiter((len(self.texts[i]) for i in ords.tolist()), dtype=np.int64, count=len(ords))


class _Texts:
    """The normalised texts of some documents by global ordinal, read back from the phase-1 spill
    (``sNNNNN.docs.jsonl`` at the byte offsets in ``sNNNNN.off.npy``): only the lines asked for are read."""

    def __init__(self, work: Path, offsets: np.ndarray) -> None:
        self.work, self.offsets = work, offsets
        self.lines = [np.load(work / f"s{i:05d}.off.npy", mmap_mode="r") for i in range(len(offsets) - 1)]

    def _where(self, ords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shard = np.searchsorted(self.offsets, ords, side="right") - 1
        return shard, ords - self.offsets[shard]

    def sizes(self, ords: np.ndarray) -> np.ndarray:
        """Line lengths in bytes (an upper bound of the texts' lengths in characters, give or take JSON escapes)."""
        shard, local = self._where(ords)
        out = np.zeros(len(ords), dtype=np.int64)
        for s in np.unique(shard):
            m = shard == s
            off = self.lines[s]
            out[m] = np.asarray(off[local[m] + 1]) - np.asarray(off[local[m]])
        return out

    def __call__(self, ords: np.ndarray) -> list[str]:
        shard, local = self._where(ords)
        out: list[str] = [""] * len(ords)
        for s in np.unique(shard).tolist():
            pick = np.flatnonzero(shard == s)
            pick = pick[np.argsort(local[pick], kind="stable")]  # read forward through the file
            off = self.lines[s]
            with open(self.work / f"s{s:05d}.docs.jsonl", "rb") as f:
                for k in pick.tolist():
                    j = int(local[k])
                    f.seek(int(off[j]))
                    out[k] = normalize(json.loads(f.read(int(off[j + 1] - off[j])))["text"])
        return out


def _exact_check(u: np.ndarray, v: np.ndarray, texts: DocTexts, s: DedupSettings,
                 budget: int = 1 << 20) -> np.ndarray:
    """Whether the exact n-gram Jaccard of each pair ``(u[i], v[i])`` is ≥ the threshold. Pairs go by bucket
    head ``v`` (so a head's text is read once for all its pairs), and texts are fetched about ``budget``
    characters (or line bytes) at a time, so the arrays stay small."""
    order = np.lexsort((u, v))
    u, v = u[order], v[order]
    keep = np.zeros(len(u), dtype=bool)
    cost = np.cumsum(texts.sizes(u) + texts.sizes(v))
    lo = 0
    while lo < len(u):
        hi = max(lo + 1, int(np.searchsorted(cost, (cost[lo - 1] if lo else 0) + budget, side="right")))
        both = np.concatenate([u[lo:hi], v[lo:hi]])
        docs = np.sort(both)
        docs = docs[np.concatenate([[True], docs[1:] != docs[:-1]])]
        inv = np.searchsorted(docs, both)
        k = hi - lo
        j = ngram_jaccard(texts(docs), inv[:k], inv[k:], s.ngram)
        keep[order[lo:hi]] = j >= s.threshold
        lo = hi
    return keep


def near_links(n: int, alive: np.ndarray, band: Callable[[int], np.ndarray],
               sig_rows: Callable[[np.ndarray], np.ndarray], s: DedupSettings, spec: LshSpec,
               texts: DocTexts | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Verified LSH links ``(u, v)`` (a document and the first document of a bucket it shares), and
    counts: ``candidates`` (pairs before verification), ``verified_exactly`` and ``accepted_exactly``.

    ``band(j)`` gives band ``j``'s hashes for all ``n`` documents; ``sig_rows(ordinals)`` the
    signatures of some documents; ``texts`` their normalised texts (needed for ``verify="exact"``).
    Only ``alive`` documents take part.
    """
    idx = np.flatnonzero(alive)
    us, vs = [], []
    for b in range(spec.bands):
        col = np.asarray(band(b))[idx]
        order = np.argsort(col, kind="stable")
        sc = col[order]
        start = np.ones(len(sc), dtype=bool)
        start[1:] = sc[1:] != sc[:-1]
        member = ~start
        if not member.any():
            continue
        head_pos = np.flatnonzero(start)[np.cumsum(start) - 1]
        us.append(idx[order[member]])
        vs.append(idx[order[head_pos[member]]])
    counts = {"candidates": 0, "verified_exactly": 0, "accepted_exactly": 0, "already_linked": 0}
    if not us:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), counts
    key = np.unique(np.concatenate(us) * n + np.concatenate(vs))
    u, v = key // n, key % n
    cands = counts["candidates"] = len(u)
    if s.verify == "none" or not cands:
        return u, v, counts
    equal = np.zeros(cands, dtype=np.int64)  # equal signature positions per pair
    step = max(1, 1_000_000 // spec.num_perm)  # ~4 MB of signatures per side at a time
    for lo in range(0, cands, step):
        a, b_ = sig_rows(u[lo : lo + step]), sig_rows(v[lo : lo + step])
        equal[lo : lo + step] = (a == b_).sum(axis=1)
    est = equal / spec.num_perm
    if s.verify == "signature":
        keep = est >= s.verify_cut()
    else:
        t, d = s.threshold, s.exact_sigmas * s.sigma()
        keep = est >= t + d
        amb = np.flatnonzero(~keep & (est > t - d))
        if amb.size:
            if texts is None:
                raise KamadoError('verify="exact" needs the documents\' texts')
            amb = amb[np.argsort(-est[amb], kind="stable")]  # likeliest first: they join clusters soonest
            counts |= _decide_exactly(n, u, v, keep, amb, texts, s)
    return u[keep], v[keep], counts


def _decide_exactly(n: int, u: np.ndarray, v: np.ndarray, keep: np.ndarray, amb: np.ndarray, texts: DocTexts,
                    s: DedupSettings, skip_linked: bool = True) -> dict[str, int]:
    """Decide the ambiguous pairs ``amb`` exactly, setting ``keep`` in place; returns the counts.

    A pair whose two documents are already in one cluster through accepted links cannot change any decision
    (nor ``duplicate_of``), so it is not read: rounds of growing size (in the order of ``amb``, so the result
    is deterministic) check the pairs still joining two clusters, and each round's accepted links join them
    for the next. On heavily duplicated crawls most ambiguous pairs fall inside a cluster. ``skip_linked=False``
    checks every pair (same decisions; for tests)."""
    counts = {"verified_exactly": 0, "accepted_exactly": 0, "already_linked": 0}
    todo, size = amb, 256
    while todo.size:
        labels = min_labels(n, u[keep], v[keep])
        same = (labels[u[todo]] == labels[v[todo]]) & skip_linked
        counts["already_linked"] += int(same.sum())
        todo = todo[~same]
        batch, todo = todo[:size], todo[size:]
        if batch.size:
            ok = _exact_check(u[batch], v[batch], texts, s)
            keep[batch] = ok
            counts["verified_exactly"] += int(batch.size)
            counts["accepted_exactly"] += int(ok.sum())
        size *= 4
    return counts


def cluster(exact: np.ndarray, has: np.ndarray | None, band: Callable[[int], np.ndarray] | None,
            sig_rows: Callable[[np.ndarray], np.ndarray] | None, s: DedupSettings,
            texts: DocTexts | None = None) -> dict[str, Any]:
    """Decisions for ``n`` documents in input order: ``code`` (KEEP/EXACT/NEAR per document),
    ``dup_of`` (ordinal of the document each one duplicates), ``candidates``, ``links``,
    ``verified_exactly`` and ``accepted_exactly`` (see :func:`near_links`)."""
    n = len(exact)
    rep = _exact_groups(exact) if s.exact else np.arange(n, dtype=np.int64)
    code = np.where(rep != np.arange(n), EXACT, KEEP).astype(np.int8)
    dup_of = rep.copy()
    counts = {"candidates": 0, "verified_exactly": 0, "accepted_exactly": 0, "already_linked": 0}
    links = 0
    if s.near and n and band is not None and sig_rows is not None and has is not None:
        alive = (code == KEEP) & has
        u, v, counts = near_links(n, alive, band, sig_rows, s, s.lsh(), texts)
        links = len(u)
        labels = min_labels(n, u, v)
        near = (labels != np.arange(n)) & (code == KEEP)
        code[near] = NEAR
        dup_of[near] = labels[near]
    return {"code": code, "dup_of": dup_of, **counts, "links": int(links)}


def dedup_texts(texts: list[str], **kw: Any) -> dict[str, Any]:
    """In-memory deduplication of a list of texts (same rules as :func:`run_dedup`); returns
    :func:`cluster`'s result. For benchmarks, tests and small corpora."""
    s = DedupSettings(**kw)
    spec = s.lsh()
    exact_parts, sig_parts, has_parts = [], [], []
    normed: list[str] = []  # kept for the exact check of ambiguous pairs
    for lo in range(0, len(texts), 2000):
        norm = [normalize(t) for t in texts[lo : lo + 2000]]
        normed += norm
        exact_parts.append(_exact_hashes(norm))
        if s.near:
            sig, has = signatures(norm, spec.num_perm, spec.ngram, spec.seed, spec.scheme)
            sig_parts.append(sig)
            has_parts.append(has)
    exact = np.concatenate(exact_parts) if exact_parts else np.zeros((0, 2), np.uint64)
    if not s.near or not texts:
        return cluster(exact, None, None, None, s)
    sig = np.concatenate(sig_parts)
    bands = np.ascontiguousarray(band_hashes(sig, spec.bands, spec.rows).T)
    return cluster(exact, np.concatenate(has_parts), lambda j: bands[j], lambda o: sig[o], s, _MemTexts(normed))


# ---------------------------------------------------------------------------------------------
# phase 3: write one shard


def write_shard(idx: int, work: str, out: str, max_bytes: int, format: str,
                level: int | None = None, rejected: str = "full") -> dict:
    """Write shard ``idx``'s kept and rejected documents (prefix ``part-NNNNN``) from its phase-1 spill.

    Kept lines are copied as they were serialized; a rejected line gets ``rejected_by``, ``reason`` and
    ``duplicate_of`` appended (the same record as ``{**doc, ...}``), or with ``rejected="ids"`` only
    ``id``, ``source`` and those three fields."""
    dec = np.load(Path(work) / f"d{idx:05d}.npy")
    with open(Path(work) / f"d{idx:05d}.dup.json", encoding="utf-8") as f:
        dup = json.load(f)
    prefix = f"part-{idx:05d}"
    kept = ShardWriter(Path(out) / "kept", prefix, max_bytes, compresslevel=level, format=format)
    rej = ShardWriter(Path(out) / "rejected", prefix, max_bytes, compresslevel=level, format=format)
    codes = dec.tolist()
    i = 0
    counts = {"kept": 0, "rejected": 0}
    full = rejected == "full"
    try:
        with open(Path(work) / f"s{idx:05d}.docs.jsonl", "rb") as f:
            for line in f:
                code = codes[i] if i < len(codes) else KEEP
                line = line[:-1]
                if code == KEEP:
                    kept.write_bytes(line)
                    counts["kept"] += 1
                else:
                    other = dup[str(i)]
                    reason = (f"exact copy of {other}" if code == EXACT
                              else f"near duplicate of {other} (MinHash LSH)")
                    why = {"rejected_by": STEP_NAMES[code], "reason": reason, "duplicate_of": other}
                    if full:  # == dumps({**doc, **why}): the doc's keys never include these three
                        rej.write_bytes(line[:-1] + b"," + dumps(why)[1:].encode("utf-8"))
                    else:
                        doc = json.loads(line)
                        rej.write({"id": doc["id"], "source": doc["source"], **why})
                    counts["rejected"] += 1
                i += 1
        if i != len(codes):
            raise RuntimeError(f"shard {idx}: wrote {i} documents, sketched {len(codes)}; was _work/ changed?")
    except BaseException:
        kept.abort()
        rej.abort()
        raise
    kept.close()
    rej.close()
    return {**counts, "kept_files": [p.name for p in kept.paths], "rejected_files": [p.name for p in rej.paths]}


# ---------------------------------------------------------------------------------------------
# tasks (run on kamado.executor: one dict per shard, named by its path in errors)


def _sketch_task(t: dict) -> dict:
    return sketch_shard(t["index"], t["path"], t["work"], t["settings"])


def _write_task(t: dict) -> dict:
    return write_shard(t["index"], t["work"], t["out"], t["max_bytes"], t["format"], t["level"], t["rejected"])


def _run(shards: list[Path], work: Path, out: Path, s: DedupSettings, output: dict, ex: Executor,
         advance: Callable[..., None]) -> tuple:
    """The three phases (see the module docstring)."""
    sk = ex.map(_sketch_task, [{"index": i, "path": str(p), "work": str(work.resolve()),
                                "settings": s.model_dump()}
                               for i, p in enumerate(shards)], label="dedup sketch")
    advance(1)
    docs = np.array([r["docs"] for r in sk], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(docs)]).astype(np.int64)
    n = int(offsets[-1])
    exact = (np.concatenate([np.load(work / f"s{i:05d}.exact.npy") for i in range(len(shards))])
             if shards else np.zeros((0, 2), np.uint64))
    if s.near and n:
        has = np.concatenate([np.load(work / f"s{i:05d}.has.npy") for i in range(len(shards))])
        sigs = _Signatures(work, offsets, s.num_perm)

        def band(j: int) -> np.ndarray:
            return np.concatenate([np.asarray(_raw(work / f"s{i:05d}.band{j:03d}.u64", np.uint64,
                                                   (int(docs[i]),))) for i in range(len(shards))])

        res = cluster(exact, has, band, sigs.rows, s, _Texts(work, offsets))
    else:
        res = cluster(exact, None, None, None, s)
    code, dup_of = res["code"], res["dup_of"]
    advance(1)
    # ids of the documents that others duplicate, for the rejected records
    need = np.unique(dup_of[code != KEEP])
    names: dict[int, str] = {}
    for si in range(len(shards)):
        lo, hi = offsets[si], offsets[si + 1]
        want = need[(need >= lo) & (need < hi)] - lo
        if want.size:
            wanted = set(want.tolist())
            with open(work / f"s{si:05d}.ids.jsonl", encoding="utf-8") as f:
                for j, line in enumerate(f):
                    if j in wanted:
                        names[int(lo + j)] = json.loads(line)
    for si in range(len(shards)):
        lo, hi = offsets[si], offsets[si + 1]
        c = code[lo:hi]
        np.save(work / f"d{si:05d}.npy", c)
        rej = np.flatnonzero(c != KEEP)
        with open(work / f"d{si:05d}.dup.json", "w", encoding="utf-8") as f:
            json.dump({str(int(j)): names[int(dup_of[lo + j])] for j in rej}, f, ensure_ascii=False)
    wr = ex.map(_write_task, [{"index": i, "path": str(p), "work": str(work.resolve()), "out": str(out.resolve()),
                               **output} for i, p in enumerate(shards)], label="dedup write")
    advance(1)
    return sk, wr, docs, code, {k: res[k] for k in ("candidates", "links", "verified_exactly", "accepted_exactly",
                                                    "already_linked")}


def run_dedup(inputs: list[Path], out: Path, settings: DedupSettings | None = None, *, executor: str = "local",
              workers: int = 2, ray_address: str | None = None, format: str = COMMAND_FORMAT, level: int | None = None,
              rejected: str = "full", max_bytes: int = 256 << 20, keep_work: bool = False, **kw: Any) -> dict:
    """Deduplicate the documents of ``inputs`` into ``out`` (kept/, rejected/, errors.jsonl, stats.json).

    ``settings`` (or, without it, its fields as keywords: ``threshold``, ``num_perm``, ``bands``, ``rows``, ``ngram``,
    ``exact``, ``near``, ``verify``, ``scheme``, ``seed``, ...) say what is a duplicate. Output: shards of ``format``
    (``jsonl.gz``, ``jsonl.zst`` or ``parquet``) at compression ``level`` (None: the format's throughput default) of
    at most ``max_bytes`` (uncompressed); ``rejected`` is ``full`` (each document with why) or ``ids`` (id, source
    and why). Returns the stats dict (also written to ``stats.json``), plus ``seconds`` and ``mb_per_s`` that are
    not written.
    """
    if settings is None:
        unknown = set(kw) - set(DedupSettings.model_fields)
        if unknown:
            raise KamadoError(f"unknown dedup settings: {', '.join(sorted(unknown))}")
        try:
            settings = DedupSettings(**kw)
        except ValidationError as e:
            raise KamadoError("invalid dedup settings\n" + format_validation_error(e)) from None
    elif kw:
        raise KamadoError(f"pass either settings or keywords, not both ({', '.join(sorted(kw))})")
    s = settings
    spec = s.lsh()
    if rejected not in ("full", "ids"):
        raise KamadoError(f"rejected={rejected!r}: use full (documents and reasons) or ids (ids and reasons)")
    output = {"max_bytes": max_bytes, "format": shard_format(format), "level": level, "rejected": rejected}
    t0 = time.perf_counter()
    shards = list_inputs([Path(p) for p in inputs])
    out = Path(out)
    folders.mark(out, "corpus dedup")  # a user's non-empty folder is refused before anything is changed
    for sub in ("kept", "rejected"):
        folders.remove(out / sub)
    work = out / "_work"
    folders.remove(work)
    work.mkdir(parents=True)

    from kamado.ui import progress

    with Executor(executor, workers, address=ray_address) as ex, progress("dedup", total=3) as advance:
        res = _run(shards, work, out, s, output, ex, advance)
    sk, wr, docs, code, counts = res
    n = int(docs.sum())

    errors = [e for r in sk for e in r["errors"]]
    with open(out / "errors.jsonl", "w", encoding="utf-8") as f:
        for e in errors:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    n_exact = int((code == EXACT).sum())
    n_near = int((code == NEAR).sum())
    files = []
    for i, p in enumerate(shards):
        files.append({"file": str(p), "input": int(docs[i]) + len(sk[i]["errors"]), "kept": wr[i]["kept"],
                      "rejected": wr[i]["rejected"], "errors": len(sk[i]["errors"])})
    stats: dict[str, Any] = {
        "input": n + len(errors),
        "kept": sum(f["kept"] for f in files),
        "rejected": n_exact + n_near,
        "errors": len(errors),
        "exact_duplicates": n_exact,
        "near_duplicates": n_near,
        "steps": [
            {"name": "exact_dedup", "type": "exact_dedup", "kind": "dedup", "docs_in": n, "docs_out": n - n_exact,
             "rejected": n_exact, "reasons": {"exact_copy": n_exact} if n_exact else {}, "enabled": s.exact},
            {"name": "minhash_dedup", "type": "minhash_dedup", "kind": "dedup", "docs_in": n - n_exact,
             "docs_out": n - n_exact - n_near, "rejected": n_near,
             "reasons": {"near_duplicate": n_near} if n_near else {}, "enabled": s.near,
             "num_perm": spec.num_perm, "bands": spec.bands, "rows": spec.rows, "threshold": s.threshold,
             "ngram": spec.ngram, "scheme": spec.scheme, "verify": s.verify, "candidates": counts["candidates"],
             "verified_exactly": counts["verified_exactly"], "accepted_exactly": counts["accepted_exactly"], "already_linked": counts["already_linked"],
             "verified_links": counts["links"]},
        ],
        "files": files,
        "kept_files": [f"kept/{name}" for r in wr for name in r["kept_files"]],
        "rejected_files": [f"rejected/{name}" for r in wr for name in r["rejected_files"]],
    }
    assert stats["input"] == stats["kept"] + stats["rejected"] + stats["errors"], stats
    with open(out / "stats.json", "w", encoding="utf-8") as f:
        json.dump(stats, f, ensure_ascii=False, indent=2)
        f.write("\n")
    if not keep_work:
        folders.remove(work)
    secs = time.perf_counter() - t0
    mb = sum(r["bytes"] for r in sk) / 1e6
    return {**stats, "seconds": round(secs, 3), "mb": round(mb, 3), "mb_per_s": round(mb / max(secs, 1e-9), 3)}
