"""Metrics with standard errors: accuracy, MC2, correlation, exact match, character F1, and the answer rules of
the AI王 (open-domain QA) and MGSM (math word problems) leaderboards."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any


def mean_stderr(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n), as lm-eval reports)."""
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(xs) / n
    if n < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in xs) / (n - 1)
    return m, math.sqrt(var / n)


def bootstrap_ratio(num: Sequence[float], den: Sequence[float], *, seed: str | int = 0,
                    n_boot: int = 1000) -> tuple[float, float, float]:
    """95% percentile interval and standard deviation of ``sum(num) / sum(den)`` over ``n_boot`` resamples of
    the units (documents) with replacement; seeded, so a result is reproducible."""
    import zlib

    import numpy as np

    a, b = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if len(a) == 0 or b.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    if len(a) == 1:
        r = float(a[0] / b[0])
        return r, r, 0.0
    rng = np.random.default_rng(zlib.crc32(str(seed).encode()))
    ratios = np.empty(n_boot)
    step = max(1, 4_000_000 // len(a))  # resamples per block: at most 4M indices in memory
    for k in range(0, n_boot, step):
        idx = rng.integers(0, len(a), (min(step, n_boot - k), len(a)))
        ratios[k:k + len(idx)] = a[idx].sum(1) / np.maximum(b[idx].sum(1), 1e-300)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi), float(ratios.std(ddof=1))


def paired_bootstrap(nll_a: Any, nll_b: Any, chars: Any, *, seed: str | int = 0,
                     n_boot: int = 2000) -> tuple[float, float, float]:
    """Mean over seeds of ``ratio(b) - ratio(a)`` on the same documents (``nll_*``: seeds × documents, in the
    same document order; ``chars``: per document), its 95% interval from resampling seeds and documents
    together, and the sample standard deviation of the resampled means."""
    import zlib

    import numpy as np

    a, b, c = (np.asarray(x, dtype=np.float64) for x in (nll_a, nll_b, chars))
    n_s, n_d = a.shape
    point = float(np.mean((b.sum(1) - a.sum(1)) / c.sum()))
    rng = np.random.default_rng(zlib.crc32(str(seed).encode()))
    diff = b - a
    out = np.empty(n_boot)
    for k in range(n_boot):
        si, di = rng.integers(0, n_s, n_s), rng.integers(0, n_d, n_d)
        out[k] = diff[np.ix_(si, di)].sum(1).mean() / c[di].sum()
    lo, hi = np.percentile(out, [2.5, 97.5])
    return point, float(lo), float(hi)


# Student's t 0.975 quantiles for 1..30 degrees of freedom (experiments have at most 16 seeds)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_interval(diffs: Sequence[float]) -> tuple[float, float, float]:
    """Mean of per-seed differences and its 95% t interval (Student's t with n-1 degrees of freedom)."""
    n = len(diffs)
    m = sum(diffs) / n
    if n < 2:
        return m, float("nan"), float("nan")
    sd = math.sqrt(sum((x - m) ** 2 for x in diffs) / (n - 1))
    h = _T975[min(n - 1, len(_T975)) - 1] * sd / math.sqrt(n)
    return m, m - h, m + h


def ratio_stderr(num: Sequence[float], den: Sequence[float]) -> tuple[float, float]:
    """``sum(num) / sum(den)`` and its standard error by the delta method over units (documents)."""
    n = len(num)
    sn, sd = sum(num), sum(den)
    if n == 0 or sd == 0:
        return float("nan"), float("nan")
    r = sn / sd
    if n < 2:
        return r, float("nan")
    dbar = sd / n
    var = sum((a - r * b) ** 2 for a, b in zip(num, den, strict=True)) / (n - 1)
    return r, math.sqrt(var / n) / dbar


def argmax(xs: Sequence[float]) -> int:
    """Index of the largest value (first on ties)."""
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def mc2(logliks: Sequence[float], true_idx: Sequence[int]) -> float:
    """TruthfulQA MC2: normalised probability mass on the true answers."""
    mx = max(logliks)
    p = [math.exp(x - mx) for x in logliks]
    return sum(p[i] for i in true_idx) / sum(p)


def _ranks(xs: Sequence[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (nan when a side is constant)."""
    n = len(x)
    if n < 2:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    return pearson(_ranks(x), _ranks(y))


def corr_stderr(r: float, n: int) -> float:
    """Approximate standard error of a correlation coefficient."""
    if n < 3 or math.isnan(r):
        return float("nan")
    return math.sqrt(max(0.0, 1 - r * r) / (n - 2))


def normalize_answer_ja(s: str) -> str:
    """JSQuAD-style normalisation: NFKC, drop whitespace and punctuation."""
    s = unicodedata.normalize("NFKC", s)
    s = re.sub(r"\s+", "", s)
    return "".join(ch for ch in s if not unicodedata.category(ch).startswith("P"))


def exact_match(pred: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised answer."""
    p = normalize_answer_ja(pred)
    return float(any(p == normalize_answer_ja(a) for a in answers))


def exact_match_strict(pred: str, answers: Sequence[str]) -> float:
    """lm-eval's ``exact_match`` after its ``remove_whitespace`` filter: stripped strings equal (first answer)."""
    return float(bool(answers) and pred.strip() == answers[0].strip())


def char_f1(pred: str, answers: Sequence[str]) -> float:
    """Best character-level F1 against the answers (JGLUE's JSQuAD metric)."""
    p = normalize_answer_ja(pred)
    best = 0.0
    for a in answers:
        g = normalize_answer_ja(a)
        common = Counter(p) & Counter(g)
        same = sum(common.values())
        if not p or not g:
            f = float(p == g)
        elif same == 0:
            f = 0.0
        else:
            prec, rec = same / len(p), same / len(g)
            f = 2 * prec * rec / (prec + rec)
        best = max(best, f)
    return best


def normalize_answer_aio(text: str) -> str:
    """The AI王 organisers' answer normalisation (cl-tohoku/quiz-datasets ``utils/normalize_answer.py``), ported
    rule for rule: "～" to "〜", NFKC, bracketed notes (【】, (), []) dropped unless nothing else is left, an
    annotation from "※" on dropped, text after "、" or "/" dropped unless the answer opens with 「 or 『, 「」 and
    『』 unwrapped (text after 『…』 dropped), whitespace runs compressed. An empty text stays empty (the original
    raises IndexError on it; model outputs may be empty)."""
    text = text.replace("～", "〜")
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"【.*?】", "", text).strip() or text
    text = re.sub(r"\(.*?\)", "", text).strip() or text
    text = re.sub(r"\[.*?\]", "", text).strip() or text
    if "※" in text:
        text = text[:text.index("※")]
    text = text.strip()
    if not text:
        return ""
    if text[0] not in "「『":
        text = re.sub(r"[、/].+$", "", text)
    text = re.sub(r"「(.*?)」", r"\1", text)
    text = re.sub(r"『(.*?)』(.*)", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def aio_scores(pred: str, answers: Sequence[str]) -> dict[str, float | str]:
    """AI王 scores of one prediction: ``exact_match`` (organisers' normalisation of both sides equal, any
    answer) and ``char_f1`` (JSQuAD's character F1 of the normalised strings); ``pred_norm`` for the details."""
    p = normalize_answer_aio(pred)
    golds = [normalize_answer_aio(a) for a in answers]
    return {"exact_match": float(any(p == g for g in golds)), "char_f1": char_f1(p, golds), "pred_norm": p}


MGSM_INVALID = "[invalid]"
_MGSM_NUMBER = re.compile(r"(\-?[0-9\.\,]+)")


def mgsm_extract(completion: str) -> int | str:
    """The answer of an MGSM completion as lm-eval 0.4.13's ``ja_leaderboard_mgsm`` reads it: the last number
    (digits, "." and ","), dots stripped at both ends, commas removed; an integer, else ``"[invalid]"``."""
    matches = _MGSM_NUMBER.findall(completion)
    if matches:
        s = matches[-1].strip(".").replace(",", "")
        try:
            x = float(s)
        except ValueError:
            return MGSM_INVALID
        if x.is_integer():
            return int(x)
    return MGSM_INVALID


def mgsm_scores(pred: str, answer: int) -> dict[str, Any]:
    """MGSM accuracy of one completion: the extracted number equals the gold integer."""
    got = mgsm_extract(pred)
    return {"acc": float(got == answer), "extracted": got}
