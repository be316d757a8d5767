"""Near-duplicate decisions at the declared threshold: kamado vs rensa vs datasketch, against exact Jaccard.

A labelled set of near-duplicate pairs is built from real Japanese text (JaQuAD's Wikipedia paragraphs in the
data root), the way ``checks/corpus-dedup-precision`` builds it: a paragraph and a copy of it with random
characters replaced (by a few hiragana) until the character 5-gram Jaccard of the two lands in a target band.
Four bands around kamado's declared threshold ``T`` (the default ``--threshold`` of ``kamado corpus dedup``):

    high    J >= T + 0.05                 should lose one copy      (recall)
    border  T - 0.05 <= J < T + 0.05      either way is defensible  (counted in precision / F1 only)
    below   T - 0.22 <= J <= T - 0.08     should keep both          (false-removal rate)
    low     J < 0.5                       should keep both

The exact Jaccard of every pair is computed here with plain Python sets of the 5-grams of the texts as given
(no normalisation). The corpus is every source paragraph (paired or not) plus the variants, shuffled.

Contenders, all at threshold ``T``, 128 permutations, character 5-grams:

- kamado: its CLI, ``kamado corpus dedup IN --out OUT --workers 1`` (decisions: documents missing from kept/);
  MB/s is in-process through its library API, ``kamado.corpus.dedup.run.dedup_texts`` (normalisation, exact
  dedup, OPH MinHash, LSH, verification, components), texts already in memory.
- rensa: ``RMinHash`` / ``RMinHashLSH(num_bands=16)`` query-then-insert, as ``checks/rensa_dedup.py``;
  also ``rensa + verify``: the same, an LSH candidate counts only if the estimated Jaccard is >= T.
- datasketch: ``MinHash`` / ``MinHashLSH(threshold=T)`` query-then-insert, same shingles.

A pair is judged "duplicate" by a tool when it did not keep both documents. Reported per tool: recall on
the high band, false-removal rate on the below band (and on the low band), precision / recall / F1 of the
duplicate decisions against ``exact J >= T`` over all labelled pairs, agreement (share of pairs whose decision
equals the exact one), and MB/s (UTF-8 megabytes of the whole corpus per CPU second of this process,
in-process, texts already in memory, contenders interleaved A B C … A B C …, median of the rounds).

    .venv/bin/python benchmarks/dedup_precision.py --json /tmp/dedup_precision.json
    .venv/bin/python benchmarks/dedup_precision.py --per-band 100 --base 1500 --rounds 5
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import print_table  # noqa: E402  (benchmarks/common.py)
from dedup_throughput import run_datasketch, shingles  # noqa: E402  (the same contender and 5-gram shingles)

NUM_PERM, NGRAM = 128, 5
FILL = "あいうえおかきくけこ"
KAMADO = str(ROOT / ".venv" / "bin" / "kamado")


# ------------------------------------------------------------------------------------------ threshold
def declared_threshold() -> tuple[float, str]:
    """kamado's default ``--threshold`` from ``kamado corpus dedup --help`` (else the config default)."""
    try:
        out = subprocess.run([KAMADO, "corpus", "dedup", "--help"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "COLUMNS": "200"}).stdout
        flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())
        m = re.search(r"--threshold <float> .*?\[default: ([0-9.]+)\]", flat)
        if m:
            return float(m.group(1)), "kamado corpus dedup --help"
    except (OSError, subprocess.SubprocessError):
        pass
    from kamado.corpus.config import CorpusConfig

    return float(CorpusConfig.model_fields["dedup_threshold"].default), "CorpusConfig.dedup_threshold"


# ------------------------------------------------------------------------------------------ labelled set
def grams(t: str) -> set[str]:
    return {t[i : i + NGRAM] for i in range(len(t) - NGRAM + 1)}


def jaccard(a: str, b: str) -> float:
    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb) if ga | gb else 1.0


def variant(t: str, target: float, rng: random.Random) -> tuple[str, float]:
    """``t`` with random characters replaced, bisecting on how many, until its Jaccard to ``t`` is near ``target``."""
    s = list(t)
    lo, hi = 0, len(s)
    best: tuple[str, float] = (t, 1.0)
    for _ in range(30):
        k = (lo + hi) // 2
        v = s[:]
        for i in rng.sample(range(len(v)), k):
            v[i] = rng.choice(FILL)
        vt = "".join(v)
        j = jaccard(t, vt)
        if abs(j - target) < abs(best[1] - target):
            best = (vt, j)
        if abs(j - target) < 0.01:
            break
        lo, hi = (k, hi) if j > target else (lo, k)
    return best


def bands(th: float) -> dict[str, tuple[float, float]]:
    """Band name -> (lo, hi) of exact Jaccard, hi exclusive (``below`` is closed, as the check reads it)."""
    return {"high": (th + 0.05, 1.0), "border": (th - 0.05, th + 0.05),
            "below": (th - 0.22, th - 0.08 + 1e-9), "low": (0.2, 0.5)}


def band_of(j: float, th: float) -> str | None:
    for name, (lo, hi) in bands(th).items():
        if lo <= j < hi:
            return name
    return None


def build(th: float, base: int, per_band: int, seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    path = Path(os.environ.get("KAMADO_DATA_ROOT", "/work/shared/data")) / "ja_text" / \
        "jaquad_train_wikipedia_paragraphs.jsonl.gz"
    paras: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            t = json.loads(line)["text"].replace("\n", "")
            if len(t) >= 600:
                paras.append(t[:2000])
            if len(paras) >= base:
                break
    paras = list(dict.fromkeys(paras))
    names = list(bands(th))
    want = dict.fromkeys(names, per_band)
    pairs: list[dict] = []
    docs: list[dict] = []
    order = rng.sample(range(len(paras)), len(paras))
    k = 0
    for i in order:
        open_bands = [b for b in names if want[b] > 0]
        if not open_bands:
            break
        b = open_bands[k % len(open_bands)]
        lo, hi = bands(th)[b]
        v, j = variant(paras[i], rng.uniform(lo + 0.01, min(hi, 0.985) - 0.01), rng)
        got = band_of(j, th)
        if got is None or want[got] <= 0:
            continue  # missed every open band: this paragraph stays unpaired
        want[got] -= 1
        pairs.append({"a": f"p{i}", "b": f"v{k}", "j": j, "band": got})
        docs.append({"id": f"v{k}", "text": v, "source": "wiki"})
        k += 1
    docs += [{"id": f"p{i}", "text": t, "source": "wiki"} for i, t in enumerate(paras)]
    rng.shuffle(docs)
    return docs, pairs


# ------------------------------------------------------------------------------------------ contenders
def run_kamado(texts: list[str], th: float) -> np.ndarray:
    from kamado.corpus.dedup.run import KEEP, dedup_texts

    return dedup_texts(texts, num_perm=NUM_PERM, threshold=th, ngram=NGRAM)["code"] != KEEP


def _rensa(texts: list[str], th: float, verify: bool) -> np.ndarray:
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold=th, num_perm=NUM_PERM, num_bands=16)
    kept: dict[int, RMinHash] = {}
    removed = np.zeros(len(texts), bool)
    for i, t in enumerate(texts):
        m = RMinHash(num_perm=NUM_PERM, seed=42)
        m.update(shingles(t))
        cands = lsh.query(m)
        if verify:
            cands = [c for c in cands if m.jaccard(kept[c]) >= th]
        if cands:
            removed[i] = True
        else:
            lsh.insert(i, m)
            if verify:
                kept[i] = m
    return removed


def run_rensa(texts: list[str], th: float) -> np.ndarray:
    return _rensa(texts, th, verify=False)


def run_rensa_verify(texts: list[str], th: float) -> np.ndarray:
    return _rensa(texts, th, verify=True)


CONTENDERS: dict[str, Callable[[list[str], float], np.ndarray]] = {
    "kamado": run_kamado, "rensa": run_rensa, "rensa + verify": run_rensa_verify, "datasketch": run_datasketch}


def kamado_cli(docs: list[dict], th: float, work: Path) -> set[str]:
    """Ids kamado's CLI keeps (default threshold, i.e. no --threshold passed, which is ``th``)."""
    (work / "in").mkdir(parents=True)
    with open(work / "in" / "docs.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    r = subprocess.run([KAMADO, "corpus", "dedup", str(work / "in"), "--out", str(work / "out"), "--workers", "1"],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"kamado corpus dedup failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    kept = set()
    for p in glob.glob(str(work / "out" / "kept" / "*.jsonl.gz")):
        with gzip.open(p, "rt", encoding="utf-8") as f:
            kept.update(json.loads(line)["id"] for line in f)
    return kept


# ------------------------------------------------------------------------------------------ scoring
def score(pairs: list[dict], kept: set[str], th: float) -> dict:
    dup = [not (p["a"] in kept and p["b"] in kept) for p in pairs]
    truth = [p["j"] >= th for p in pairs]

    def rate(band: str) -> tuple[float, int]:
        sel = [d for d, p in zip(dup, pairs, strict=True) if p["band"] == band]
        return (sum(sel) / len(sel) if sel else float("nan")), len(sel)

    tp = sum(d and t for d, t in zip(dup, truth, strict=True))
    fp = sum(d and not t for d, t in zip(dup, truth, strict=True))
    fn = sum(t and not d for d, t in zip(dup, truth, strict=True))
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    out = {f"removed_{b}": rate(b)[0] for b in bands(th)}
    out.update({"recall_high": out["removed_high"], "false_removal_below": out["removed_below"],
                "false_removal_low": out["removed_low"], "precision": prec, "recall": rec, "f1": f1,
                "agreement": sum(d == t for d, t in zip(dup, truth, strict=True)) / len(pairs),
                "false_positive_j": sorted(round(p["j"], 4) for d, t, p in zip(dup, truth, pairs, strict=True)
                                           if d and not t),
                "false_negative_j": sorted(round(p["j"], 4) for d, t, p in zip(dup, truth, pairs, strict=True)
                                           if t and not d)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=int, default=3000,
                    help="source paragraphs (>= 600 characters) to read, at most (the file holds 680)")
    ap.add_argument("--per-band", type=int, default=100, help="labelled pairs per Jaccard band")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    th, th_from = declared_threshold()
    t0 = time.perf_counter()
    docs, pairs = build(th, a.base, a.per_band, a.seed)
    texts = [d["text"] for d in docs]
    ids = [d["id"] for d in docs]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    counts = {b: sum(p["band"] == b for p in pairs) for b in bands(th)}
    print(f"threshold {th} (from {th_from}); {len(docs)} docs, {mb:.2f} MB; labelled pairs per band {counts} "
          f"(built in {time.perf_counter() - t0:.1f}s)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        cli_kept = kamado_cli(docs, th, Path(tmp))

    times: dict[str, list[float]] = {n: [] for n in CONTENDERS}
    removed: dict[str, np.ndarray] = {}
    for r in range(a.rounds):
        for name, fn in CONTENDERS.items():
            t = time.process_time()  # CPU seconds of this process: wall time means little on a shared box
            rem = fn(texts, th)
            times[name].append(time.process_time() - t)
            removed.setdefault(name, rem)
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in CONTENDERS), flush=True)

    kept = {n: {i for i, rm in zip(ids, removed[n], strict=True) if not rm} for n in CONTENDERS}
    lib_vs_cli = kept["kamado"] == cli_kept
    kept["kamado"] = cli_kept  # kamado's decisions are the CLI's
    results = []
    for name in CONTENDERS:
        s = score(pairs, kept[name], th)
        s.update({"tool": name, "threshold": th, "mb_per_s": mb / statistics.median(times[name]),
                  "cpu_seconds": times[name], "decisions": "CLI" if name == "kamado" else "in-process"})
        results.append(s)

    def f(x: float) -> str:
        return "n/a" if x != x else f"{x:.3f}"

    lo_b, hi_b = th - 0.22, th - 0.08
    cols = ["tool", "threshold", f"recall J>={th + 0.05:.2f}", f"false removals {lo_b:.2f}-{hi_b:.2f}",
            "false removals J<0.5", f"precision (J>={th:g})", "recall", "F1", "MB/s", "agreement"]
    print_table(cols, [[r["tool"], f"{th:g}", f(r["recall_high"]), f(r["false_removal_below"]),
                        f(r["false_removal_low"]), f(r["precision"]), f(r["recall"]), f(r["f1"]),
                        f"{r['mb_per_s']:.2f}", f(r["agreement"])] for r in results])
    print(f"\nkamado decisions: CLI (--workers 1); MB/s: in-process dedup_texts; in-process decisions "
          f"{'identical to' if lib_vs_cli else 'DIFFER from'} the CLI's on this corpus. "
          f"Pairs per band: {counts}.")
    if a.json:
        a.json.write_text(json.dumps({"threshold": th, "threshold_from": th_from, "num_perm": NUM_PERM,
                                      "ngram": NGRAM, "docs": len(docs), "mb": mb, "pairs_per_band": counts,
                                      "rounds": a.rounds, "kamado_library_equals_cli": lib_vs_cli,
                                      "results": results, "pairs": pairs}, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
