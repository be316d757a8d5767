"""MinHash core on real Japanese text: Jaccard estimates, Japanese-correct normalisation, batch independence,
connected components, and in-memory dedup finding injected copies."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from conftest import wiki_paragraphs

from kamado.corpus.dedup import minhash as mh
from kamado.corpus.dedup.run import EXACT, KEEP, NEAR, dedup_texts


@pytest.fixture(scope="module")
def paragraphs(data_root: Path) -> list[str]:
    return wiki_paragraphs(data_root, 400)


def _shingles(t: str, n: int = 5) -> set[str]:
    return {t[i : i + n] for i in range(len(t) - n + 1)}


def _edit(t: str, k: int, rng: random.Random) -> str:
    chars = list(t)
    for _ in range(k):
        chars[rng.randrange(len(chars))] = "の"
    return "".join(chars)


def test_normalize_keeps_kana_diacritics_and_folds_width() -> None:
    assert mh.normalize("が") != mh.normalize("か")
    assert mh.normalize("ぱ") != mh.normalize("は")
    assert mh.normalize("ｶﾞｯｺｳ") == "ガッコウ"  # half-width kana composed, not stripped
    assert mh.normalize(" ＡＢＣ\u3000 def\n") == "abc def"


@pytest.mark.parametrize("scheme", ["oph", "classic"])
def test_signature_agreement_estimates_jaccard(paragraphs: list[str], scheme: str) -> None:
    rng = random.Random(1)
    errs = []
    for t in paragraphs[:80]:
        u = _edit(t, rng.randrange(1, 40), rng)
        a, b = _shingles(mh.normalize(t)), _shingles(mh.normalize(u))
        j = len(a & b) / len(a | b)
        sig, has = mh.signatures([mh.normalize(t), mh.normalize(u)], 128, 5, 0, scheme)
        assert has.all()
        errs.append((sig[0] == sig[1]).mean() - j)
    errs = np.array(errs)
    assert abs(errs.mean()) < 0.02, errs.mean()
    assert np.sqrt((errs**2).mean()) < 0.06


def test_signatures_do_not_depend_on_the_batch(paragraphs: list[str]) -> None:
    texts = [mh.normalize(t) for t in paragraphs[:50]] + ["", "短い", "x"]
    whole, has = mh.signatures(texts, 64)
    for i in (0, 17, 49, 50, 51, 52):
        alone, h1 = mh.signatures([texts[i]], 64)
        assert np.array_equal(alone[0], whole[i])
        assert h1[0] == has[i]
    assert not has[50] and has[51] and has[52]  # empty text: no n-grams; short text: one


def test_min_labels_matches_a_plain_union_find() -> None:
    rng = np.random.default_rng(0)
    n = 500
    u = rng.integers(0, n, 400)
    v = rng.integers(0, n, 400)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(u.tolist(), v.tolist(), strict=True):
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    expect = np.array([find(i) for i in range(n)])
    comp_min = {}
    for i, r in enumerate(expect):
        comp_min.setdefault(r, i)
    assert np.array_equal(mh.min_labels(n, u, v), np.array([comp_min[r] for r in expect]))


def test_lsh_params_trade_off() -> None:
    b, r = mh.lsh_params(0.8, 128)
    assert b * r <= 128
    assert 0.7 < (1 / b) ** (1 / r) < 0.9
    b2, r2 = mh.lsh_params(0.5, 128)
    assert (1 / b2) ** (1 / r2) < (1 / b) ** (1 / r)


def test_dedup_texts_finds_injected_copies_and_keeps_the_first(paragraphs: list[str]) -> None:
    rng = random.Random(3)
    texts = list(paragraphs[:200])
    exact_src = rng.sample(range(200), 15)
    near_src = rng.sample(range(200), 15)
    texts += [paragraphs[i] for i in exact_src]
    texts += [_edit(paragraphs[i], len(paragraphs[i]) // 100, rng) for i in near_src]
    texts.append(paragraphs[0].replace("が", "か"))  # differs only by a dakuten: a near copy, not exact
    res = dedup_texts(texts)
    code, dup_of = res["code"], res["dup_of"]
    assert (code[:200] == KEEP).all()  # originals come first and are kept
    assert (code[200:215] == EXACT).all() and dup_of[200:215].tolist() == exact_src
    assert (code[215:230] == NEAR).all() and dup_of[215:230].tolist() == near_src
    assert code[230] == NEAR and dup_of[230] == 0
    unrelated = dedup_texts(paragraphs[200:400])
    assert (unrelated["code"] == KEEP).all()  # different paragraphs are never merged


def test_exact_only_and_dakuten_are_not_exact_duplicates() -> None:
    res = dedup_texts(["がっこうへいく。", "かっこうへいく。", "ガッコウ", "ｶﾞｯｺｳ"], near=False)
    assert res["code"].tolist() == [KEEP, KEEP, KEEP, EXACT]


def test_ngram_jaccard_is_exact(paragraphs: list[str]) -> None:
    rng = random.Random(9)
    texts = [mh.normalize(t) for t in paragraphs[:20]]
    texts += [_edit(t, len(t) // 15, rng) for t in texts] + ["", "ab", "ab", "がっこう", "かっこう"]
    texts.append("".join(chr(0x4E00 + i) for i in range(9000)))  # alphabet too large for one 64-bit key
    n = len(texts)
    a = np.array([rng.randrange(n) for _ in range(150)] + list(range(20)) + [40, 41, 43, n - 1])
    b = np.array([rng.randrange(n) for _ in range(150)] + list(range(20, 40)) + [40, 42, 44, 0])
    for k in (1, 3, 5, 7):
        want = []
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            gx = _shingles(texts[x] + "\0" * (k - len(texts[x])) if 0 < len(texts[x]) < k else texts[x], k)
            gy = _shingles(texts[y] + "\0" * (k - len(texts[y])) if 0 < len(texts[y]) < k else texts[y], k)
            want.append(len(gx & gy) / len(gx | gy) if gx | gy else 1.0)
        assert mh.ngram_jaccard(texts, a, b, k).tolist() == want
