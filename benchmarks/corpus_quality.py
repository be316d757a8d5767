"""How well do filters find the paragraphs humans marked "bad"? kamado vs HojiChar on labelled mC4-ja.

Data: ``ja_web_noisy/mc4ja_paragraphs_labeled.jsonl`` (catalog ``mc4-ja-labeled``; 663 good / 603 bad
human-labelled mC4 Japanese paragraphs). A contender "detects bad" when it rejects a paragraph. Scores:
balanced accuracy and Matthews correlation (MCC) of that detection, plus recall and precision of "bad"
and the share of paragraphs rejected.

Contenders:

- **HojiChar core filters**: its core Japanese document filters with their defaults, the same chain as
  ``benchmarks/corpus_throughput.py`` (normaliser, AcceptJapanese, length ≥ 100, adult / discrimination /
  violence NG words, BBS, ads, rare 句点, header/footer tags, PII mask, character repetition, ellipsis).
- **kamado rules**: kamado's ``default-ja`` filter chain (the corpus-wide ``repeated_lines`` step is left
  out: it needs a whole corpus, not independent paragraphs).
- **kamado classifier**: the quality classifier (hashed character n-grams, linear), scored by k-fold
  cross-validation: every paragraph is scored by a model trained on the other folds, and
  near-duplicate paragraphs (MinHash Jaccard ≥ 0.5) always share a fold. Bad = P(good) < 0.5.
- **kamado rules + classifier**: the default chain followed by the ``quality_classifier`` step:
  bad when either rejects (classifier scores cross-validated as above).
- **kamado perplexity**: CCNet-style per-character perplexity under a character 5-gram LM trained on
  Japanese Wikipedia; bad = the ``tail`` bucket.

    .venv/bin/python benchmarks/corpus_quality.py
    .venv/bin/python benchmarks/corpus_quality.py --folds 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import print_table  # noqa: E402  (benchmarks/common.py)

from kamado.catalog import resolve  # noqa: E402
from kamado.corpus.steps import quality as Q  # noqa: E402


def hojichar_rejects(texts: list[str]) -> np.ndarray:
    from hojichar import Compose, Document
    from hojichar.filters import document_filters as df

    pipe = Compose([  # the same chain as benchmarks/corpus_throughput.py
        df.DocumentNormalizer(), df.AcceptJapanese(), df.DocumentLengthFilter(min_doc_len=100, max_doc_len=500_000),
        df.DiscardAdultContentJa(), df.DiscardDiscriminationContentJa(), df.DiscardViolenceContentJa(),
        df.DiscardBBSComments(), df.DiscardAds(), df.DiscardRareKuten(), df.HeaderFooterTagsRemover(),
        df.MaskPersonalInformation(), df.CharRepetitionRatioFilter(), df.DiscardTooManyEndingEllipsis(),
    ])
    return np.array([pipe.apply(Document(t)).is_rejected for t in texts], dtype=bool)


def kamado_rules_rejects(texts: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    from kamado.corpus.config import default_chain
    from kamado.corpus.io.documents import Document
    from kamado.corpus.steps.base import Env
    from kamado.corpus.steps.chain import Pipeline

    chain = default_chain("default-ja")
    chain.steps = [s for s in chain.steps if s["type"] != "repeated_lines"]
    pipe = Pipeline(chain, Env())
    out = np.zeros(len(texts), bool)
    by: dict[str, int] = {}
    for i, t in enumerate(texts):
        _, step, _ = pipe.process(Document(str(i), t, "mc4"))
        if step is not None:
            out[i] = True
            by[step] = by.get(step, 0) + 1
    return out, by


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-perplexity", action="store_true", help="skip the perplexity row (trains an LM once)")
    args = ap.parse_args()

    path = resolve("mc4-ja-labeled")
    texts, labels = Q.load_labelled([path])
    bad = labels == 0
    print(f"{path.name}: {len(texts)} paragraphs, {int(bad.sum())} bad, {int((~bad).sum())} good")

    results: list[tuple[str, np.ndarray, str]] = []
    t0 = time.perf_counter()
    results.append(("HojiChar core filters", hojichar_rejects(texts), f"{time.perf_counter() - t0:.1f}s"))
    t0 = time.perf_counter()
    rules, by = kamado_rules_rejects(texts)
    results.append(("kamado rules (default-ja)", rules, f"{time.perf_counter() - t0:.1f}s"))
    t0 = time.perf_counter()
    cv = Q.cross_validate(texts, labels, Q.ClassifierConfig(), folds=args.folds)
    clf = cv["scores"] < 0.5
    secs = f"{time.perf_counter() - t0:.1f}s"
    results.append((f"kamado classifier ({args.folds}-fold CV)", clf, secs))
    results.append(("kamado rules + classifier", rules | clf, secs))
    if not args.no_perplexity:
        from kamado.corpus.steps.perplexity import reference_lm

        t0 = time.perf_counter()
        lm = reference_lm()
        ppl = lm.perplexity(texts)
        results.append(("kamado perplexity (tail bucket)", lm.buckets(ppl) == "tail", f"{time.perf_counter() - t0:.1f}s"))

    cols = ["contender", "balanced acc", "MCC", "recall bad", "precision bad", "rejected", "time"]
    rows = []
    for name, pred, secs in results:
        m = Q.metrics(bad, pred)
        rows.append([name, f"{m['balanced_accuracy']:.3f}", f"{m['mcc']:.3f}", f"{m['recall_bad']:.3f}",
                     f"{m['precision_bad']:.3f}", f"{pred.mean():.1%}", secs])
    print_table(cols, rows)
    print(f"\nclassifier cross-validated AUC {cv['auc']:.3f}; kamado rules rejected by step: "
          + ", ".join(f"{k} {v}" for k, v in sorted(by.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
