"""The hojichar-compat steps make HojiChar's decisions (each filter alone, and the whole chain)."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from kamado.corpus.config import default_chain
from kamado.corpus.io.documents import Document
from kamado.corpus.io.readers import read_shard
from kamado.corpus.steps.base import Analysis, Env
from kamado.corpus.steps.chain import Pipeline, build_steps
from kamado.corpus.steps.rules import LiteralMatcher, char_repetition_ratio
from kamado.corpus.text.normalize import nfkc, nfkc_table_text

hojichar = pytest.importorskip("hojichar")
from hojichar import Document as HDoc  # noqa: E402
from hojichar.filters import document_filters as df  # noqa: E402


def _texts(data_root: Path, n: int = 400) -> list[str]:
    rng = random.Random(3)
    out = [d.text for d in read_shard(data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl")][:n]
    out += [d.text for d in read_shard(data_root / "ja_web_noisy" / "fineweb2_edu_ja_docs.jsonl")]
    out += [d.text[:20000] for d in read_shard(data_root / "ja_text" / "aozora_pd_works_clean.jsonl.gz")][:10]
    # crafted: repeated characters, ellipsis lines, BBS-like dates, ads, list words at the edges
    out += ["あ" * 250 + "。" * 5, "本文です...\n" * 20, "2020年1月2日 投稿 コメント(月)12話 - " * 3,
            "送料 営業時間 ■" * 6, "痴" + "ふつうの文章。" * 20, "ふつうの文章。" * 20 + "アス",
            "2020-1-123話2020/12/31日" * 8, "ｶﾞｷﾞ①Ａ㍿…" * 30 + "。" * 9]
    for _ in range(50):  # shuffled fragments of real text
        t = rng.choice(out)
        i = rng.randrange(max(1, len(t)))
        out.append(t[i:] + t[:i])
    return out


def test_nfkc_is_exact(data_root: Path) -> None:
    rng = random.Random(0)
    pool = "かがカﾞｶﾟ한ㅏ\u3099\u0301e①ＡＢ…゛㍿ᄀ\u1161𝐀"
    texts = _texts(data_root, 200) + ["".join(rng.choice(pool) for _ in range(rng.randrange(1, 30)))
                                      for _ in range(2000)]
    for t in texts:
        assert nfkc(t) == unicodedata.normalize("NFKC", t)


def test_packaged_nfkc_table_is_current() -> None:
    from importlib import resources

    packaged = resources.files("kamado").joinpath("resources/nfkc_unstable.txt").read_text(encoding="ascii")
    if packaged.split("\n", 1)[0] == unicodedata.unidata_version:
        assert packaged == nfkc_table_text()


@pytest.mark.parametrize("step,filt", [
    ({"type": "kana_start"}, df.AcceptJapanese()),
    ({"type": "kuten"}, df.DiscardRareKuten()),
    ({"type": "ending_ellipsis"}, df.DiscardTooManyEndingEllipsis()),
    ({"type": "char_run"}, df.SingleCharacterRepetitionFilter()),
    ({"type": "char_repetition"}, df.CharRepetitionRatioFilter()),
    ({"type": "bbs"}, df.DiscardBBSComments()),
    ({"type": "keywords", "lists": ["hojichar-adult-keywords-ja"]}, df.DiscardAdultContentJa()),
    ({"type": "keywords", "lists": ["hojichar-violence-keywords-ja"]}, df.DiscardViolenceContentJa()),
    ({"type": "keywords", "lists": ["hojichar-advertisement-keywords-ja"], "max_hits": 14}, df.DiscardAds()),
])
def test_each_rule_matches_hojichar(data_root: Path, step: dict, filt) -> None:
    s = build_steps(default_chain("default").model_copy(update={"steps": [step]}), Env(data_root))[0]
    for t in _texts(data_root):
        t = unicodedata.normalize("NFKC", t)
        want = filt.apply(HDoc(t)).is_rejected
        got = s.decide(s.measure(Analysis(t), None)) is not None
        assert got == want, (step, t[:80])


def test_literal_matcher_counts_like_findall() -> None:
    import re

    rng = random.Random(1)
    words = ["ab", "abc", "b", "bcd", "cd", "アス", "d"]
    pat = re.compile("|".join(map(re.escape, words)))
    m = LiteralMatcher(words)
    for _ in range(500):
        t = "".join(rng.choice("abcdアスパ ") for _ in range(rng.randrange(0, 40)))
        assert m.count(Analysis(t))[0] == len(pat.findall(t)), t


def test_char_repetition_ratio_formula() -> None:
    t = "abcdeabcdeabcdeXYZ" * 3
    ref = df.CharRepetitionRatioFilter.compute_character_repetition_ratio(t, 5)
    assert char_repetition_ratio(np.frombuffer(t.encode("utf-32-le"), np.uint32), 5) == pytest.approx(ref)


def test_hojichar_compat_chain_agrees_and_masks(data_root: Path) -> None:
    pipe = Pipeline(default_chain("hojichar-compat"), Env(data_root))
    h = hojichar.Compose([df.DocumentNormalizer(), df.AcceptJapanese(), df.DocumentLengthFilter(100, 500000),
                          df.DiscardBBSComments(), df.DiscardAds(), df.DiscardAdultContentJa(),
                          df.DiscardDiscriminationContentJa(), df.DiscardViolenceContentJa(), df.DiscardRareKuten(),
                          df.CharRepetitionRatioFilter(), df.SingleCharacterRepetitionFilter(),
                          df.DiscardTooManyEndingEllipsis(), df.MaskPersonalInformation()])
    texts = _texts(data_root) + ["連絡は090-1234-5678 か hoge@example.co.jp まで。" + "ふつうの文章です。" * 15]
    for i, t in enumerate(texts):
        hd = h.apply(HDoc(t))
        doc, by, _ = pipe.process(Document(str(i), t, "t"))
        assert (by is None) == (not hd.is_rejected), t[:80]
        if by is None:
            assert doc.text == hd.text
    assert json.dumps(default_chain("hojichar-compat").model_dump())  # the chain file validates
