"""A fastText-style quality classifier: hashed character n-grams and a linear model, in NumPy.

Features are the character n-grams (default 1–3) of the NFKC-normalised text plus a few length/shape
tokens, and (``word_runs``) word-ish tokens without a dictionary: maximal runs of one character class
(kanji, hiragana, katakana, Latin, digits...) and adjacent pairs of runs. Everything is hashed into
``buckets`` slots; each block is weighted by sublinear tf-idf (``idf``; n-gram buckets seen in fewer than
``min_df`` training documents are dropped) and L2-normalised per document.
The model is L2-regularised logistic regression trained with full-batch Adam, classes balanced.
Its score is P(good) in [0, 1]: higher is better. A model folder holds ``weights.npy``, ``idf.npy``
(when ``idf``) and ``config.json``; nothing is pickled. Config version 1 folders (log-counts, one
block, no idf) still load and score as before.

:class:`QualityStep` scores documents, stores the score in ``doc.meta["quality"]`` and keeps a
document when its score reaches a threshold (or the threshold that keeps a given top fraction of the
training-set score distribution).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kamado.config import KamadoError
from kamado.corpus.dedup.minhash import normalize, shingle_hashes
from kamado.jsonl import iter_numbered

GOOD_LABELS = {"good", "1", "true", "pos", "positive", "keep", "high"}
BAD_LABELS = {"bad", "0", "false", "neg", "negative", "drop", "low"}


@dataclass
class ClassifierConfig:
    """Features and training settings of the quality classifier."""

    ngrams: list[int] = field(default_factory=lambda: [1, 2, 3])
    buckets: int = 1 << 18
    epochs: int = 8  # passes of full-batch Adam steps, ``steps_per_epoch`` each
    steps_per_epoch: int = 25
    lr: float = 0.05
    l2: float = 1e-4
    class_ngrams: list[int] = field(default_factory=list)  # n-grams of character classes (off: no gain)
    max_chars: int = 4000  # score at most this many characters (head of the document)
    seed: int = 0
    rule_features: bool = False  # binned rule measures (script ratios, 。/、 density, symbols, repetition) as tokens
    rule_weight: float = 0.5  # their L2 norm per document, beside the n-grams' 1
    word_runs: bool = True  # word-ish tokens: runs of one character class (kanji, kana, Latin...) and adjacent pairs
    idf: bool = True  # weigh each bucket by its smoothed inverse document frequency in the training set
    min_df: int = 3  # character n-gram buckets in fewer training documents are dropped (with ``idf``)


# models saved before these fields existed (config version 1) were trained without them
_LEGACY = {"word_runs": False, "idf": False, "min_df": 1}


def load_labelled(paths: list[Path]) -> tuple[list[str], np.ndarray]:
    """Texts and labels (1 = good, 0 = bad) from JSONL files of ``{"text", "label"}`` records."""
    texts: list[str] = []
    labels: list[int] = []
    for p in paths:
        for n, rec in iter_numbered(p):
            try:
                text, lab = rec["text"], str(rec["label"]).strip().lower()
            except (KeyError, TypeError) as e:
                raise KamadoError(f"{p}:{n}: expected a JSON object with text and label ({e})") from None
            if lab in GOOD_LABELS:
                labels.append(1)
            elif lab in BAD_LABELS:
                labels.append(0)
            else:
                raise KamadoError(f"{p}:{n}: label {rec['label']!r} is neither good nor bad")
            texts.append(str(text))
    if not texts or len(set(labels)) < 2:
        raise KamadoError(f"{', '.join(map(str, paths))}: need labelled examples of both classes")
    return texts, np.array(labels, dtype=np.int8)


def _char_class(c: str) -> str:
    o = ord(c)
    if 0x3041 <= o <= 0x309F:
        return "h"
    if 0x30A0 <= o <= 0x30FF:
        return "k"
    if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF:
        return "c"
    if c.isdigit():
        return "d"
    if c.isalpha():
        return "a"
    if c.isspace():
        return " "
    if c in "。、,.!?！？":
        return "p"
    return "s"


_CLASS_TABLE = {o: _char_class(chr(o)) for o in range(0x10000)}


_SHAPE: np.ndarray | None = None  # per BMP code point: 1 isdigit, 2 ASCII letter, 4 kana, 8 punctuation


def _shape_table() -> np.ndarray:
    global _SHAPE
    if _SHAPE is None:
        t = np.zeros(0x10000, dtype=np.uint8)
        t[[i for i in range(0x10000) if chr(i).isdigit()]] |= 1
        t[[ord(c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"]] |= 2
        t[0x3040:0x3100] |= 4
        t[[ord(c) for c in "。、!?."]] |= 8
        _SHAPE = t
    return _SHAPE


def _shape_tokens(text: str) -> str:
    """A few coarse document-shape tokens (length, digits, Latin, kana share) as extra features."""
    n = len(text)
    if not n:
        return "\x01len0"
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if int(cps.max()) < 0x10000:
        v = _shape_table()[cps]
        digits, latin, kana, punct = (int(np.count_nonzero(v & b)) / n for b in (1, 2, 4, 8))
    else:  # astral characters: the per-character definitions
        digits = sum(c.isdigit() for c in text) / n
        latin = sum(c.isascii() and c.isalpha() for c in text) / n
        kana = sum("\u3040" <= c <= "\u30ff" for c in text) / n
        punct = sum(c in "。、!?!?." for c in text) / n
    return " ".join([f"\x01len{int(math.log2(n + 1))}", f"\x01dig{min(9, int(digits * 20))}",
                     f"\x01lat{min(9, int(latin * 10))}", f"\x01kana{min(9, int(kana * 10))}",
                     f"\x01pun{min(9, int(punct * 50))}"])


def _bin(x: float, edges: tuple[float, ...]) -> int:
    return sum(x > e for e in edges)


def rule_tokens(text: str) -> list[str]:
    """The rule measures of a text, binned into tokens (a linear model learns a weight per bin): the
    kamado filters' signals (script ratios, 。 and 、 per 100 chars, symbols, digits, Latin, spaces, the
    HojiChar character repetition ratio, how the text ends), without any word list."""
    from kamado.corpus.steps.rules import char_repetition_ratio
    from kamado.corpus.text import ja

    cps = ja.codepoints(text)
    n = max(int(cps.size), 1)
    c = np.bincount(ja.char_classes(cps), minlength=ja.N_CLASSES) if cps.size else np.zeros(ja.N_CLASSES, np.int64)
    ns = max(n - int(c[ja.SPACE]), 1)
    last = text.rstrip()[-1:]
    return [f"hira{_bin(c[ja.HIRAGANA] / ns, (0.1, 0.2, 0.3, 0.4, 0.5))}",
            f"kata{_bin(c[ja.KATAKANA] / ns, (0.05, 0.1, 0.2, 0.3))}",
            f"kanj{_bin(c[ja.KANJI] / ns, (0.2, 0.3, 0.4, 0.5))}",
            f"sym{_bin((c[ja.SYMBOL] + c[ja.ASCII_PUNCT]) / ns, (0.02, 0.05, 0.1, 0.2))}",
            f"dig{_bin(c[ja.DIGIT] / ns, (0.01, 0.03, 0.06, 0.1, 0.2))}",
            f"lat{_bin(c[ja.LATIN] / ns, (0.01, 0.03, 0.06, 0.1, 0.2))}",
            f"sp{_bin(c[ja.SPACE] / n, (0.01, 0.03, 0.06, 0.1))}",
            f"kut{_bin(text.count('。') / n * 100, (0.5, 1, 2, 3, 4, 6))}",
            f"ten{_bin(text.count('、') / n * 100, (0.5, 1, 2, 3, 4, 6))}",
            f"rep{_bin(char_repetition_ratio(cps, 5), (0.05, 0.1, 0.2, 0.33))}",
            "endp" if last in "。!?」)" else "endo"]


def _token_rows(tokens: list[list[str]], buckets: int, salt: str) -> tuple[np.ndarray, np.ndarray]:
    import zlib

    rows = np.repeat(np.arange(len(tokens), dtype=np.int64), [len(t) for t in tokens])
    cols = np.fromiter((zlib.crc32((salt + t).encode()) % buckets for ts in tokens for t in ts), dtype=np.int64,
                       count=int(rows.size))
    return rows, cols


def word_runs(text: str) -> list[str]:
    """Word-ish tokens of a (normalised) text without a dictionary: maximal runs of one character class
    (kanji, hiragana, katakana, Latin, digits, punctuation...; spaces separate), e.g. ``写真`` ``を`` ``撮影``."""
    from kamado.corpus.text import ja

    cps = ja.codepoints(text)
    if not cps.size:
        return []
    cl = ja.char_classes(cps)
    starts = np.flatnonzero(np.r_[True, cl[1:] != cl[:-1]])
    ends = np.r_[starts[1:], cl.size]
    return [text[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True) if cl[a] != ja.SPACE]


def _word_tokens(text: str) -> list[str]:
    """The word runs of a text and each adjacent pair of them."""
    w = word_runs(text)
    return w + [f"{a}\x00{b}" for a, b in zip(w, w[1:], strict=False)]


def _counts(rows: list[np.ndarray], cols: list[np.ndarray], n: int, buckets: int) -> tuple[np.ndarray, ...]:
    """Distinct ``(row, col)`` pairs of a block of hashed tokens and their counts."""
    key = np.concatenate(rows) * buckets + np.concatenate(cols) if rows else np.zeros(0, np.int64)
    uk, cnt = np.unique(key, return_counts=True)
    return uk // buckets, uk % buckets, cnt.astype(np.float64)


def _blocks(texts: list[str], cfg: ClassifierConfig) -> tuple[list[tuple[np.ndarray, ...]], list[str]]:
    """Hashed token counts per feature block: character n-grams (+ shape and class n-gram tokens), and
    word runs when ``cfg.word_runs``. Returns the blocks and the normalised texts."""
    norm = [normalize(t[: cfg.max_chars]) for t in texts]
    n = len(texts)
    rows, cols = [], []
    for k, g in enumerate(cfg.ngrams):
        h, counts = shingle_hashes(norm, g, seed=1000 + k)
        rows.append(np.repeat(np.arange(n, dtype=np.int64), counts))
        cols.append((h % np.uint64(cfg.buckets)).astype(np.int64))
    shape = [_shape_tokens(t) for t in texts]
    h, counts = shingle_hashes(shape, 4, seed=2000)
    rows.append(np.repeat(np.arange(n, dtype=np.int64), counts))
    cols.append((h % np.uint64(cfg.buckets)).astype(np.int64))
    if cfg.class_ngrams:
        cls = [t.translate(_CLASS_TABLE) for t in norm]
        for k, g in enumerate(cfg.class_ngrams):
            h, counts = shingle_hashes(cls, g, seed=3000 + k)
            rows.append(np.repeat(np.arange(n, dtype=np.int64), counts))
            cols.append((h % np.uint64(cfg.buckets)).astype(np.int64))
    blocks = [_counts(rows, cols, n, cfg.buckets)]
    if cfg.word_runs:
        rr, cc = _token_rows([_word_tokens(t) for t in norm], cfg.buckets, "word:")
        blocks.append(_counts([rr], [cc], n, cfg.buckets))
    return blocks, norm


def inverse_document_frequency(texts: list[str], cfg: ClassifierConfig) -> np.ndarray:
    """Smoothed idf per bucket, ``ln((1 + n) / (1 + df)) + 1``, from a training set; 0 for buckets that
    never occur and, in the character n-gram block, for those in fewer than ``cfg.min_df`` documents."""
    blocks, _ = _blocks(texts, cfg)
    n = len(texts)
    df_all = np.zeros(cfg.buckets)
    for k, (_r, c, _v) in enumerate(blocks):
        df = np.bincount(c, minlength=cfg.buckets).astype(np.float64)
        if k == 0 and cfg.min_df > 1:
            df[df < cfg.min_df] = 0.0
        df_all += df
    return np.where(df_all > 0, np.log((1.0 + n) / (1.0 + df_all)) + 1.0, 0.0)


def featurize(texts: list[str], cfg: ClassifierConfig,
              idf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Sparse rows ``(row, col, val, n)``: per block, hashed token log-counts (times ``idf`` when given),
    L2-normalised per document; the blocks side by side."""
    blocks, norm = _blocks(texts, cfg)
    n = len(texts)
    rs, cs, vs = [], [], []
    for r, c, cnt in blocks:
        if idf is None:
            v = np.log1p(cnt)
        else:  # sublinear tf-idf; buckets with idf 0 (unseen, or too rare in training) drop out
            v = (1.0 + np.log(cnt)) * idf[c]
            keep = v != 0
            r, c, v = r[keep], c[keep], v[keep]
        nrm = np.sqrt(np.bincount(r, v * v, minlength=n))
        rs.append(r)
        cs.append(c)
        vs.append(v / np.maximum(nrm[r], 1e-12))
    r, c, v = np.concatenate(rs), np.concatenate(cs), np.concatenate(vs)
    if cfg.rule_features:  # one-hot bins, each document's rule part scaled to norm rule_weight
        toks = [rule_tokens(t) for t in norm]
        rr, cc = _token_rows(toks, cfg.buckets, "rule:")
        vv = np.full(rr.size, cfg.rule_weight / np.sqrt(max(1, len(toks[0]) if toks else 1)))
        r, c, v = np.concatenate([r, rr]), np.concatenate([c, cc]), np.concatenate([v, vv])
    return r, c, v, n


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass
class QualityModel:
    """A trained classifier: ``score(texts)`` gives P(good)."""

    cfg: ClassifierConfig
    w: np.ndarray
    b: float
    meta: dict = field(default_factory=dict)
    idf: np.ndarray | None = None  # per-bucket idf (``cfg.idf``), from the training set

    def score(self, texts: list[str]) -> np.ndarray:
        """P(good) for each text (float64)."""
        if not texts:
            return np.zeros(0)
        r, c, v, n = featurize(texts, self.cfg, self.idf)
        return _sigmoid(np.bincount(r, v * self.w[c], minlength=n) + self.b)

    def threshold_for_fraction(self, fraction: float) -> float:
        """Score that keeps about ``fraction`` of documents, from the stored training score quantiles."""
        qs = self.meta.get("score_quantiles")
        if not qs:
            raise KamadoError("this model has no stored score distribution; use a threshold")
        return float(np.quantile(np.array(qs), 1.0 - fraction))

    def save(self, folder: Path, dtype: str = "float32") -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "weights.npy", self.w.astype(dtype))
        if self.idf is not None:
            np.save(folder / "idf.npy", self.idf.astype(dtype))
        elif (folder / "idf.npy").exists():
            (folder / "idf.npy").unlink()
        with open(folder / "config.json", "w", encoding="utf-8") as f:
            json.dump({"kind": "kamado-quality-classifier", "version": 2, "config": asdict(self.cfg),
                       "bias": self.b, "score": "P(good)", **self.meta}, f, indent=2)

    @classmethod
    def load(cls, folder: Path) -> QualityModel:
        folder = Path(folder)
        try:
            with open(folder / "config.json", encoding="utf-8") as f:
                meta = json.load(f)
            w = np.load(folder / "weights.npy", allow_pickle=False).astype(np.float64)
        except FileNotFoundError as e:
            raise KamadoError(f"{folder}: not a quality model folder ({e.filename} missing)") from None
        meta.pop("kind", None)
        version = meta.pop("version", 1)
        cfg = ClassifierConfig(**{**(_LEGACY if version < 2 else {}), **meta.pop("config")})
        b = float(meta.pop("bias"))
        if w.shape != (cfg.buckets,):
            raise KamadoError(f"{folder}/weights.npy: shape {w.shape}, config says ({cfg.buckets},)")
        idf = None
        if cfg.idf:
            try:
                idf = np.load(folder / "idf.npy", allow_pickle=False).astype(np.float64)
            except FileNotFoundError:
                raise KamadoError(f"{folder}: the config asks for idf weights, idf.npy is missing") from None
            if idf.shape != w.shape:
                raise KamadoError(f"{folder}/idf.npy: shape {idf.shape}, config says ({cfg.buckets},)")
        return cls(cfg, w, b, meta, idf)


def _fit(r: np.ndarray, c: np.ndarray, v: np.ndarray, n: int, y: np.ndarray,
         cfg: ClassifierConfig) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression by full-batch Adam on the sparse rows (only the buckets
    that occur are optimised; float32 arithmetic)."""
    used, cc = np.unique(c, return_inverse=True)
    f = len(used)
    v32 = v.astype(np.float32)
    w = np.zeros(f, np.float32)
    b = 0.0
    pos = max(1, int(y.sum()))
    neg = max(1, n - pos)
    sw = (np.where(y == 1, n / (2 * pos), n / (2 * neg)) / n).astype(np.float32)
    yf = y.astype(np.float32)
    m_w = np.zeros_like(w)
    v_w = np.zeros_like(w)
    m_b = v_b = 0.0
    b1, b2, eps = 0.9, 0.999, 1e-8
    steps = cfg.epochs * cfg.steps_per_epoch
    for t in range(1, steps + 1):
        z = np.bincount(r, v32 * w[cc], minlength=n).astype(np.float32) + np.float32(b)
        g_row = (_sigmoid(z) - yf) * sw
        g_w = np.bincount(cc, v32 * g_row[r], minlength=f).astype(np.float32) + np.float32(cfg.l2) * w
        g_b = float(g_row.sum())
        m_w *= b1
        m_w += (1 - b1) * g_w
        v_w *= b2
        v_w += (1 - b2) * g_w * g_w
        m_b = b1 * m_b + (1 - b1) * g_b
        v_b = b2 * v_b + (1 - b2) * g_b * g_b
        lr = cfg.lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        w -= np.float32(lr) * m_w / (np.sqrt(v_w) + np.float32(eps))
        b -= lr * m_b / (math.sqrt(v_b) + eps)
    full = np.zeros(cfg.buckets)
    full[used] = w
    return full, b


def train(texts: list[str], labels: np.ndarray, cfg: ClassifierConfig | None = None,
          meta: dict | None = None) -> QualityModel:
    """Fit a model on all examples (labels: 1 good, 0 bad)."""
    cfg = cfg or ClassifierConfig()
    idf = inverse_document_frequency(texts, cfg) if cfg.idf else None
    r, c, v, n = featurize(texts, cfg, idf)
    y = np.asarray(labels, dtype=np.float64)
    w, b = _fit(r, c, v, n, y, cfg)
    model = QualityModel(cfg, w, b, dict(meta or {}), idf)
    train_scores = _sigmoid(np.bincount(r, v * w[c], minlength=n) + b)
    model.meta.setdefault("examples", n)
    model.meta.setdefault("score_quantiles", np.quantile(train_scores, np.linspace(0, 1, 101)).round(6).tolist())
    return model


def group_ids(texts: list[str], threshold: float = 0.5) -> np.ndarray:
    """Near-duplicate groups (MinHash, character 5-grams): one label per text, for leak-free folds."""
    from kamado.corpus.dedup.minhash import band_hashes, lsh_params, min_labels, signatures

    sig, has = signatures([normalize(t) for t in texts], 128, 5, seed=7)
    b, r = lsh_params(threshold, 128)
    bh = band_hashes(sig, b, r)
    us, vs = [], []
    for j in range(b):
        order = np.argsort(bh[:, j], kind="stable")
        sc = bh[order, j]
        same = np.flatnonzero(sc[1:] == sc[:-1])
        us.append(order[same + 1])
        vs.append(order[same])
    u, v = np.concatenate(us), np.concatenate(vs)
    ok = ((sig[u] == sig[v]).mean(axis=1) >= threshold) & has[u] & has[v]
    return min_labels(len(texts), u[ok], v[ok])


def folds_for(texts: list[str], labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index per example: near-duplicate groups stay together, classes spread evenly."""
    groups = group_ids(texts)
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    perm = rng.permutation(len(uniq))
    fold_of_group = {}
    counts = np.zeros((folds, 2))
    for gi in perm:
        g = uniq[gi]
        members = labels[groups == g]
        need = np.bincount(members, minlength=2)
        f = int(np.argmin((counts + need).max(axis=1) + counts.sum(axis=1) * 1e-3))
        fold_of_group[g] = f
        counts[f] += need
    return np.array([fold_of_group[g] for g in groups])


def metrics(y_true_bad: np.ndarray, pred_bad: np.ndarray) -> dict[str, float]:
    """Balanced accuracy and Matthews correlation of "bad" detection (1 = bad)."""
    t = np.asarray(y_true_bad, bool)
    p = np.asarray(pred_bad, bool)
    tp = float((t & p).sum())
    tn = float((~t & ~p).sum())
    fp = float((~t & p).sum())
    fn = float((t & ~p).sum())
    tpr = tp / max(1.0, tp + fn)
    tnr = tn / max(1.0, tn + fp)
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {"balanced_accuracy": 0.5 * (tpr + tnr), "mcc": (tp * tn - fp * fn) / den if den else 0.0,
            "recall_bad": tpr, "precision_bad": tp / max(1.0, tp + fp)}


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney rank statistic, ties averaged)."""
    s = np.asarray(s, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    ss = s[order]
    start = np.r_[True, ss[1:] != ss[:-1]]
    gid = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    size = np.diff(np.r_[first, len(ss)])
    ranks = np.empty(len(s))
    ranks[order] = first[gid] + (size[gid] + 1) / 2.0
    pos = np.asarray(y, bool)
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / max(1, n1 * n0))


def cross_validate(texts: list[str], labels: np.ndarray, cfg: ClassifierConfig | None = None,
                   folds: int = 5) -> dict[str, Any]:
    """Out-of-fold scores (each example scored by a model that never saw it or its near-copies)."""
    cfg = cfg or ClassifierConfig()
    fold = folds_for(texts, labels, folds, cfg.seed)
    oof = np.zeros(len(texts))
    for f in range(folds):
        tr = np.flatnonzero(fold != f)
        te = np.flatnonzero(fold == f)
        m = train([texts[i] for i in tr], labels[tr], cfg)
        oof[te] = m.score([texts[i] for i in te])
    res = metrics(labels == 0, oof < 0.5)
    res["auc"] = auc(labels == 1, oof)
    res["scores"] = oof
    res["folds"] = fold
    return res


def train_with_cv(texts: list[str], labels: np.ndarray, cfg: ClassifierConfig | None = None, folds: int = 5,
                  meta: dict | None = None) -> tuple[QualityModel, dict[str, Any] | None]:
    """Cross-validate (when ``folds > 1``), then train on everything. The stored score quantiles (used
    by ``keep_fraction``) come from the out-of-fold scores, which look like scores of unseen text."""
    cfg = cfg or ClassifierConfig()
    meta = dict(meta or {})
    cv = None
    if folds and folds > 1:
        cv = cross_validate(texts, labels, cfg, folds)
        meta["cv"] = {"folds": folds, **{k: round(float(cv[k]), 4)
                                          for k in ("balanced_accuracy", "mcc", "auc", "recall_bad", "precision_bad")}}
        meta["score_quantiles"] = np.quantile(cv["scores"], np.linspace(0, 1, 101)).round(6).tolist()
    return train(texts, labels, cfg, meta), cv


# --------------------------------------------------------------------------------- pipeline step
_LOADED: dict[str, QualityModel] = {}


def default_model(labelled: Path, cache: Path | None = None) -> QualityModel:
    """The classifier trained on ``labelled`` with default settings, cached on disk after the first time."""
    import hashlib
    import os
    import shutil

    digest = hashlib.sha256(Path(labelled).read_bytes()).hexdigest()[:16]
    base = cache or Path(os.environ.get("KAMADO_CACHE", Path.home() / ".cache" / "kamado"))
    folder = Path(base) / "quality" / f"{Path(labelled).stem}-{digest}"
    if (folder / "config.json").is_file():
        return QualityModel.load(folder)
    texts, labels = load_labelled([Path(labelled)])
    model, _ = train_with_cv(texts, labels, ClassifierConfig(), 5, {"trained_on": str(Path(labelled).name)})
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return model


def packaged_model_dir(name: str) -> Path:
    """Folder of a model shipped with kamado (``src/kamado/resources/quality/NAME``)."""
    from importlib import resources

    folder = Path(str(resources.files("kamado").joinpath(f"resources/quality/{name}")))
    if not (folder / "config.json").is_file():
        raise KamadoError(f"no packaged quality model {name!r} (kamado/resources/quality/)")
    return folder


def _register_steps() -> None:
    from kamado.corpus.steps.base import Analysis, Filter, StepParams, fmt, register

    class QualityParams(StepParams):
        model: str | None = None  # model folder (train-classifier --out), or packaged:NAME (kamado/resources/quality/NAME);
        # default: trained on mc4-ja-labeled on first use
        threshold: float | None = 0.5  # keep documents scoring at least this P(good)
        keep_fraction: float | None = None  # or keep about this top share (training score quantiles)

    @register("quality_classifier")
    class QualityFilter(Filter):
        """Score with the quality classifier (``meta.quality`` = P(good)); reject low scores."""

        Params = QualityParams

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            p = self.p
            key = f"{p.model}|{self.env.data_root}"
            if key not in _LOADED:
                if p.model and p.model.startswith("packaged:"):
                    _LOADED[key] = QualityModel.load(packaged_model_dir(p.model.split(":", 1)[1]))
                elif p.model:
                    _LOADED[key] = QualityModel.load(self.env.resolve(p.model))
                else:
                    _LOADED[key] = default_model(self.env.resolve("mc4-ja-labeled"))
            self.model = _LOADED[key]
            if p.keep_fraction is not None:
                if not 0.0 < p.keep_fraction <= 1.0:
                    raise KamadoError(f"step {self.name}: keep_fraction must be in (0, 1]")
                self.cut = self.model.threshold_for_fraction(p.keep_fraction)
            else:
                self.cut = p.threshold if p.threshold is not None else 0.0

        def measure(self, a: Analysis, doc: Any) -> dict[str, Any]:
            s = round(float(self.model.score([a.text])[0]), 5)
            if doc is not None and isinstance(getattr(doc, "meta", None), dict):
                doc.meta["quality"] = s
            return {"quality": s}

        def decide(self, m: dict[str, Any]) -> str | None:
            if m["quality"] < self.cut:
                return f"low_quality: {fmt(m['quality'])} < {fmt(self.cut)}"
            return None


_register_steps()
