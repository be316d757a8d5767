"""Normalizer, cleaners and filters on real and crafted text."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest

from kamado.config import ConfigError
from kamado.corpus.config import ChainConfig, default_chain, load_chain
from kamado.corpus.io.documents import Document
from kamado.corpus.io.readers import read_shard
from kamado.corpus.steps.base import Analysis, Env
from kamado.corpus.steps.chain import Pipeline, build_steps, redecide
from kamado.corpus.steps.filters import WordMatcher, dup_ngram_fractions, top_ngram_fraction
from kamado.corpus.text import ja
from kamado.corpus.text.normalize import nfkc_ja, normalize

ROOT = Path(__file__).resolve().parents[1]


def test_normalize_japanese_safe() -> None:
    assert normalize("ｶﾞｷﾞ　ＡＢＣ１２３！") == "ガギ ABC123!"
    assert normalize("待って…‥") == "待って…‥"  # NFKC would turn these into dots
    assert normalize("a\r\nb\u200b\x07c\n\n\n\nd  e ") == "a\nbc\n\nd e"
    broken = "こんにちは世界".encode().decode("latin-1")
    assert normalize(broken) == "こんにちは世界"


def test_nfkc_ja_matches_nfkc_on_real_text(data_root: Path) -> None:
    texts = [d.text for d in read_shard(data_root / "ja_web_noisy" / "fineweb2_edu_ja_docs.jsonl")]
    texts += [d.text for d in read_shard(data_root / "ja_web_noisy" / "mc4ja_paragraphs_labeled.jsonl")][:300]
    texts.append("ﾊﾟﾋﾟﾌﾟ ㈱ ① が ᄀ\u1161 𝐀𝐁")
    for t in texts:
        t = t.replace("…", "").replace("‥", "").replace("゛", "").replace("゜", "")
        assert nfkc_ja(t) == unicodedata.normalize("NFKC", t)


def test_char_classes() -> None:
    text = "ひらカタ漢字、。ABc12 ★・"
    cls = ja.char_classes(ja.codepoints(text)).tolist()
    assert cls[:2] == [ja.HIRAGANA] * 2 and cls[2:4] == [ja.KATAKANA] * 2 and cls[4:6] == [ja.KANJI] * 2
    assert cls[6:8] == [ja.JA_PUNCT] * 2 and cls[8:11] == [ja.LATIN] * 3 and cls[11:13] == [ja.DIGIT] * 2
    assert cls[14] == ja.SYMBOL and cls[15] == ja.SYMBOL  # ・ is not katakana


def _steps(*specs: dict, root: Path | None = None) -> list:
    return build_steps(ChainConfig(steps=list(specs)), Env(root))


def test_pii_and_boilerplate(data_root: Path) -> None:
    bp_spec = next(s for s in default_chain("default-ja").steps if s.get("name") == "boilerplate")
    pii, bp = _steps({"type": "pii"}, bp_spec, root=data_root)
    text = "連絡はa.b@example.co.jpか090-1234-5678へ。詳細は https://x.jp/a?b=1 を参照。ID 2019-08-18"
    assert pii.rewrite(text) == "連絡は<EMAIL>か<PHONE>へ。詳細は  を参照。ID 2019-08-18"
    page = "本文の段落です。とても大事な内容が書かれています。\nコメント送信\nページの先頭へ\n関連記事\nCopyright © 2020 Foo Inc.\nカテゴリー: 日記\n本文の続き。"
    assert bp.rewrite(page) == "本文の段落です。とても大事な内容が書かれています。\n本文の続き。"


def test_ng_words_katakana_boundary(data_root: Path) -> None:
    m = WordMatcher(["アス", "ass", "くそ", "死"])
    assert m.find("アスパラガスを食べた") == []
    assert m.find("Assistant and class") == []
    assert [("アスが" + "x")[s:e] for s, e in m.find("アスが")] == ["アス"]
    assert len(m.find("An ASS. くそっ")) == 2
    assert m.find("死") == [(0, 1)]
    (ng,) = _steps({"type": "ng_words", "lists": ["hojichar-adult-keywords-ja"], "max_ratio": 0.01}, root=data_root)
    assert ng.measure(Analysis("アスパラガスとトマトのサラダを作りました。"), None)["hits"] == 0


def _ref_dup(ids: list[int], n: int) -> float:
    seen, rep = set(), np.zeros(len(ids), bool)
    for i in range(len(ids) - n + 1):
        k = tuple(ids[i:i + n])
        if k in seen:
            rep[i:i + n] = True
        seen.add(k)
    return rep.sum() / len(ids)


def test_repetition_matches_reference() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        ids = rng.integers(0, 4, size=400).astype(np.uint64)
        got = dup_ngram_fractions(ids, None, [3, 5, 8])
        for n in (3, 5, 8):
            assert got[n] == pytest.approx(_ref_dup(ids.tolist(), n))
    ids = np.array([1, 2] * 50, dtype=np.uint64)
    assert top_ngram_fraction(ids, None, 2) == pytest.approx(0.5 * 2)  # "12" occurs 50 times, 2 chars each


def test_filters_reject_noise_keep_prose(data_root: Path) -> None:
    pipe = Pipeline(default_chain("default-ja"), Env(data_root))
    aozora = [d for d in read_shard(data_root / "ja_text" / "aozora_pd_works_clean.jsonl.gz")][:15]
    kept = [pipe.process(d)[1] is None for d in aozora]
    assert sum(kept) >= 13  # literary prose passes
    noise = {
        "spam": "激安セール！今すぐクリック！" * 40,
        "english": "This is an English page about cooking pasta at home with friends. " * 10,
        "list": "\n".join(f"・商品{i} ￥{i}00" for i in range(80)),
        "katakana": "アイウエオカキクケコサシスセソタチツテト " * 20,
    }
    for name, text in noise.items():
        doc, by, reason = pipe.process(Document(id=name, text=text, source="t"))
        assert by is not None, name
        assert reason and ":" in reason
        assert "measures" in doc.meta


def test_measure_then_decide(data_root: Path) -> None:
    chain = default_chain("default-ja")
    pipe = Pipeline(chain, Env(data_root))
    docs = list(read_shard(data_root / "ja_text" / "jaquad_train_wikipedia_paragraphs.jsonl.gz"))[:20]
    doc = next(r[0] for r in (pipe.process(x) for x in docs) if r[1] is None)
    rec = doc.to_json()
    assert redecide(rec, chain) == (None, None)
    strict = default_chain("default-ja")
    for s in strict.steps:
        if s["type"] == "script":
            s["min_hiragana"] = 0.99
    by, reason = redecide(rec, strict)  # re-tuned thresholds, stored measurements, no recomputation
    assert by == "script" and reason.startswith("low_hiragana")


def test_default_chains_are_the_packaged_yaml_files() -> None:
    """The YAML files under kamado/resources/chains/ are the one source of the built-in chains; the mixed
    ``default`` chain is the Japanese chain up to language detection (accepting ja and en), then the
    Japanese and the English tails, each step tagged with its language."""
    folder = ROOT / "src" / "kamado" / "resources" / "chains"
    from kamado.corpus.config import DEFAULT_CHAINS

    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(DEFAULT_CHAINS)
    for name in DEFAULT_CHAINS:
        chain, base = load_chain(name)
        assert base is None and chain.name == name
        assert chain.model_dump() == load_chain(folder / f"{name}.yaml")[0].model_dump(), name
    assert not (ROOT / "recipes" / "corpus").exists()  # no second copy to drift

    def split(steps: list[dict]) -> tuple[list[dict], list[dict]]:
        i = next(i for i, s in enumerate(steps) if s["type"] == "language")
        return steps[: i + 1], steps[i + 1:]

    head, ja_tail = split(default_chain("default-ja").steps)
    _, en_tail = split(default_chain("default-en").steps)
    head[-1] = {**head[-1], "accept": ["ja", "en"]}
    tails = [{**s, "name": f"{lang}_{s.get('name', s['type'])}", "lang": lang}
             for lang, tail in (("ja", ja_tail), ("en", en_tail)) for s in tail]
    assert default_chain("default").steps == head + tails
    with pytest.raises(KeyError):
        default_chain("default-xx")


def test_chain_errors_name_the_step(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("steps:\n  - {type: length, min_chars: abc}\n", encoding="utf-8")
    chain, _ = load_chain(p)
    with pytest.raises(ConfigError, match=r"steps\[0\].min_chars"):
        build_steps(chain, Env())
    with pytest.raises(Exception, match="unknown step type"):
        build_steps(ChainConfig(steps=[{"type": "nope"}]), Env())
