"""Near-duplicate removal: kamado MinHash LSH vs datasketch, HojiChar's LSH dedup and rensa, same documents.

The corpus is Japanese text from the data root (Wikipedia paragraphs and Aozora Bunko chunks) with
injected copies: exact ones and near ones with 1–20 % of characters edited, at random later positions.
Every contender gets the same texts (normalised the way kamado compares them: NFKC, lower case,
collapsed whitespace), the same 5-character shingles, 128 permutations and threshold 0.8, and removes
a document when it duplicates an earlier one (query-then-insert; kamado: connected components, first
document of each kept). Throughput counts the UTF-8 megabytes of the texts, end to end (shingling,
hashing, LSH, decisions). Contenders run interleaved A B C D … A B C D … and the table shows medians.

Quality: for a sample of documents (every injected copy plus as many random others, capped), the exact
character 5-gram Jaccard similarity to every earlier document is computed (sparse matrix product);
*recall* is the share of sampled documents with an earlier document at Jaccard ≥ 0.8 that were removed,
*recall 0.8–0.9* the same for the hardest band, and *false removals* the removed sampled documents
whose best earlier match is below 0.6.

    .venv/bin/python benchmarks/dedup_throughput.py                 # ~4 MB, 3 rounds
    .venv/bin/python benchmarks/dedup_throughput.py --mb 8 --rounds 5
    .venv/bin/python benchmarks/dedup_throughput.py --whole-job IN.jsonl   # + whole processes (corpus_jobs.py)

These figures are in-process (texts already in memory, nothing written). ``--whole-job IN.jsonl`` adds
``kamado corpus dedup`` as a user runs it — start-up, read, dedup, compress, write kept/ and rejected/ —
per output format, beside the bare rensa script, in CPU seconds of whole processes (benchmarks/corpus_jobs.py).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import print_table  # noqa: E402  (benchmarks/common.py)

from kamado.catalog import data_root, resolve  # noqa: E402
from kamado.corpus.dedup.minhash import normalize, shingle_hashes  # noqa: E402

NUM_PERM, THRESHOLD, NGRAM = 128, 0.8, 5
KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"


def build_corpus(mb: float, seed: int = 0) -> tuple[list[str], list[int]]:
    """Base documents plus injected copies; returns texts and, per text, the index of its source (-1)."""
    rng = random.Random(seed)
    base: list[str] = []
    root = data_root()
    for line in gzip.open(resolve("ja-wikipedia", root), "rt", encoding="utf-8"):
        buf = ""
        for para in json.loads(line)["text"].split("\n\n"):
            buf = f"{buf}\n{para}" if buf else para
            if len(buf) >= 200:
                base.append(buf[:2000])
                buf = ""
    for line in gzip.open(resolve("aozora", root), "rt", encoding="utf-8"):
        t = json.loads(line)["text"]
        base += [t[i : i + 800] for i in range(0, len(t) - 200, 800)]
    rng.shuffle(base)
    texts: list[str] = []
    size = 0
    for t in base:
        texts.append(t)
        size += len(t.encode("utf-8"))
        if size >= mb * 0.9e6:
            break
    src = [-1] * len(texts)
    n0 = len(texts)
    copies: list[tuple[str, int]] = []
    for i in rng.sample(range(n0), n0 // 50):  # exact copies
        copies.append((texts[i], i))
    for i in rng.sample(range(n0), n0 // 12):  # near copies, 1-20 % of characters edited
        t = list(texts[i])
        for _ in range(max(1, int(len(t) * rng.uniform(0.01, 0.2) / 3))):
            op, k = rng.random(), rng.randrange(len(t))
            if op < 0.6:
                t[k] = rng.choice(KANA)
            elif op < 0.8 and len(t) > 10:
                del t[k]
            else:
                t.insert(k, rng.choice(KANA))
        copies.append(("".join(t), i))
    for t, i in copies:  # insert each copy somewhere after its source
        pos = rng.randrange(i + 1, len(texts) + 1)
        texts.insert(pos, t)
        src.insert(pos, i)
    return texts, src


def shingles(t: str) -> list[str]:
    return [t[i : i + NGRAM] for i in range(len(t) - NGRAM + 1)] or [t]


# ------------------------------------------------------------------------------------------ contenders
def run_kamado(texts: list[str], num_perm: int = NUM_PERM) -> np.ndarray:
    from kamado.corpus.dedup.run import KEEP, dedup_texts

    res = dedup_texts(texts, num_perm=num_perm, threshold=THRESHOLD, ngram=NGRAM)
    return res["code"] != KEEP


def run_kamado_256(texts: list[str]) -> np.ndarray:
    return run_kamado(texts, 256)


def run_datasketch(texts: list[str], th: float = THRESHOLD) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=th, num_perm=NUM_PERM)
    removed = np.zeros(len(texts), bool)
    for i, t in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(t)])
        if lsh.query(m):
            removed[i] = True
        else:
            lsh.insert(str(i), m)
    return removed


def run_hojichar(texts: list[str]) -> np.ndarray:
    if "redis" not in sys.modules:  # hojichar's dedup module imports redis only for its Redis backends
        try:
            import redis  # noqa: F401
        except ImportError:
            import types

            import datasketch  # noqa: F401  (imports its optional redis support before the stub exists)

            sys.modules["redis"] = types.ModuleType("redis")
            sys.modules.pop("hojichar.filters.deduplication", None)
    from hojichar import Compose, Document
    from hojichar.filters.deduplication import GenerateDedupLSH, InlineDeduplicator

    pipe = Compose([GenerateDedupLSH(num_perm=NUM_PERM, threshold=THRESHOLD, n_grams=NGRAM), InlineDeduplicator()])
    return np.array([pipe.apply(Document(t)).is_rejected for t in texts], dtype=bool)


def run_rensa(texts: list[str]) -> np.ndarray:
    from rensa import RMinHash, RMinHashLSH

    # rensa needs num_perm divisible by the bands: 16 x 8 (the recall-friendly side of 9 x 13)
    lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, num_bands=16)
    removed = np.zeros(len(texts), bool)
    for i, t in enumerate(texts):
        m = RMinHash(num_perm=NUM_PERM, seed=42)
        m.update(shingles(t))
        if lsh.query(m):
            removed[i] = True
        else:
            lsh.insert(i, m)
    return removed


CONTENDERS = {"datasketch": run_datasketch, "hojichar (rensa)": run_hojichar, "rensa": run_rensa,
              "kamado": run_kamado, "kamado 256 perms": run_kamado_256}


# ----------------------------------------------------------------------------------------- ground truth
def best_earlier_jaccard(texts: list[str], sample: np.ndarray) -> np.ndarray:
    """Exact character n-gram Jaccard of each sampled text to its most similar earlier text."""
    from scipy import sparse

    hashes, counts = shingle_hashes(texts, NGRAM, seed=99)
    rows = np.repeat(np.arange(len(texts)), counts)
    key = np.unique(rows.astype(np.uint64) << np.uint64(40) ^ (hashes >> np.uint64(24)))
    r = (key >> np.uint64(40)).astype(np.int64)
    c = np.unique(key & np.uint64((1 << 40) - 1), return_inverse=True)[1]
    x = sparse.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(texts), int(c.max()) + 1))
    size = np.asarray(x.sum(axis=1)).ravel()
    inter = (x[sample] @ x.T).tocoo()
    best = np.zeros(len(sample))
    ok = inter.col < sample[inter.row]
    i, j, v = inter.row[ok], inter.col[ok], inter.data[ok]
    jac = v / (size[sample[i]] + size[j] - v)
    np.maximum.at(best, i, jac)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=4.0, help="corpus size before injected copies")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sample", type=int, default=1500, help="documents checked against exact Jaccard")
    ap.add_argument("--only", nargs="*", default=list(CONTENDERS), help="contenders to run")
    ap.add_argument("--whole-job", type=Path, default=None, help="JSONL input for whole-process dedup jobs too")
    args = ap.parse_args()

    raw, src = build_corpus(args.mb)
    texts = [normalize(t) for t in raw]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    srcs = np.array(src)
    print(f"corpus: {len(texts):,} documents, {mb:.2f} MB, {(srcs >= 0).sum():,} injected copies; "
          f"num_perm={NUM_PERM}, threshold={THRESHOLD}, {NGRAM}-char shingles")

    rng = np.random.default_rng(0)
    inj = np.flatnonzero(srcs >= 0)
    others = np.flatnonzero(srcs < 0)
    half = args.sample // 2
    sample = np.unique(np.concatenate([rng.choice(inj, min(half, len(inj)), replace=False),
                                       rng.choice(others, min(args.sample - min(half, len(inj)), len(others)),
                                                  replace=False)]))
    t0 = time.perf_counter()
    best = best_earlier_jaccard(texts, sample)
    print(f"ground truth: {len(sample):,} sampled documents, {(best >= THRESHOLD).sum():,} with an earlier "
          f"document at Jaccard ≥ {THRESHOLD} ({time.perf_counter() - t0:.1f}s)")

    times: dict[str, list[float]] = {k: [] for k in args.only}
    removed: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name in args.only:
            t0 = time.perf_counter()
            removed[name] = CONTENDERS[name](texts)
            times[name].append(time.perf_counter() - t0)

    dup = best >= THRESHOLD
    hard = (best >= THRESHOLD) & (best < 0.9)
    ref = "hojichar (rensa)" if "hojichar (rensa)" in times else args.only[0]
    ref_speed = mb / statistics.median(times[ref])
    cols = ["contender", "MB/s (median)", f"× {ref}", "removed", "recall J≥0.8", "recall 0.8–0.9", "false removals"]
    rows = []
    for name in args.only:
        speed = mb / statistics.median(times[name])
        rm = removed[name][sample]
        rows.append([name, f"{speed:.2f}", f"{speed / ref_speed:.2f}", f"{int(removed[name].sum()):,}",
                     f"{rm[dup].mean():.3f}", f"{rm[hard].mean():.3f} (n={hard.sum()})",
                     f"{int((rm & (best < 0.6)).sum())}"])
    print_table(cols, rows)
    print(f"\n{args.rounds} interleaved rounds; per-round seconds: "
          + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()))
    if args.whole_job:
        from corpus_jobs import whole_jobs  # benchmarks/corpus_jobs.py

        whole_jobs(args.whole_job, ["dedup"], args.rounds)


if __name__ == "__main__":
    main()
