"""Perplexity on fixed characters: the same text for every tokenizer, special strings as text, intervals over
documents, and the unigram floor of the training mixture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from kamado.config import KamadoError
from kamado.eval.metrics import bootstrap_ratio
from kamado.eval.perplexity import _texts_of, build_docs, parse_source, select


def test_selection_depends_on_the_text_alone(data_root: Path) -> None:
    texts = _texts_of("wikitext2", data_root / "en_text/wikitext-2/valid_first_half.txt")
    a = select(texts, 100_000, "7:ppl:wikitext2")
    assert sum(map(len, a)) == 100_000 and a == select(texts, 100_000, "7:ppl:wikitext2")
    assert a != select(texts, 100_000, "8:ppl:wikitext2")
    assert select(texts, 10**9, "k") and sum(map(len, select(texts, 10**9, "k"))) == sum(map(len, texts))


def test_a_text_file_is_scored_on_every_character(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    body = "".join(f"The <unk> cat sat on the </s> mat. {i}\n" for i in range(30))
    f.write_text(body, encoding="utf-8")
    docs = _texts_of("notes", f)
    assert len(docs) == 30 and "".join(docs) == body  # no blank line: one document a line, newlines kept
    para = tmp_path / "para.txt"
    para.write_text("一段落目。\n続き。\n\n二段落目。\n\n\n三。\n", encoding="utf-8")
    assert "".join(_texts_of("para", para)) == para.read_text(encoding="utf-8")
    assert parse_source(str(f)) == ("notes", str(f)) and parse_source("ja_wiki=jsquad-valid") == ("ja_wiki", "jsquad-valid")


def test_two_tokenizers_score_the_same_characters(tmp_path: Path, data_root: Path, toy: Path) -> None:
    """The toy tokenizer and a character-level view of it see the same documents and characters."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy)
    sources = ["ja_wiki=jsquad-valid", "en_wiki=wikitext2"]
    docs = build_docs(sources, tok, data_root, max_chars=20_000, seed=3)

    class ByChar:  # another "tokenizer": one id per character
        bos_token_id = None

        def __call__(self, texts, **kw):
            return {"input_ids": [[ord(c) % 1000 for c in t] for t in texts]}

    other = build_docs(sources, ByChar(), data_root, max_chars=20_000, seed=3)
    assert [(d.id, d.chars) for d in docs] == [(d.id, d.chars) for d in other]
    for label in ("ja_wiki", "en_wiki"):
        assert sum(d.chars for d in docs if d.source == label) == 20_000
    with pytest.raises(KamadoError, match="given twice"):
        build_docs(["a=wikitext2", "a=jsquad-valid"], tok, data_root, max_chars=100, seed=1)


def test_special_strings_are_scored_as_text(tmp_path: Path, data_root: Path) -> None:
    """With a kamado tokenizer (control pieces never win as text) ``</s>`` in the text is characters."""
    from kamado.corpus.docs import resolve_inputs
    from kamado.tokenizer import load
    from kamado.tokenizer.config import TokenizerConfig
    from kamado.tokenizer.train import train_tokenizer

    cfg = TokenizerConfig(vocab_size=800, sample_chars=60_000, character_coverage=0.995, heldout_chars=2_000)
    train_tokenizer(resolve_inputs(["ja-wikipedia"], data_root), cfg, tmp_path / "tok", seed=5)
    tok = load(tmp_path / "tok")
    f = tmp_path / "special.txt"
    f.write_text("".join(f"東京は<unk>日本の首都です。</s>大阪。{i}\n" for i in range(10)), encoding="utf-8")
    docs = build_docs([str(f)], tok, None, max_chars=10**6, seed=1)
    assert docs and not any({tok.eos_token_id, tok.unk_token_id} & set(d.tokens) for d in docs)
    lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
    assert sorted(d.tokens for d in docs) == sorted(tok(lines, add_special_tokens=False,
                                                        split_special_tokens=True)["input_ids"])
    assert sum(len(d.tokens) for d in docs) > len(tok(f.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])


def test_bootstrap_interval_covers_the_ratio_and_narrows_with_documents() -> None:
    rng = np.random.default_rng(0)
    nll, chars = rng.gamma(5, 20, 400), rng.integers(50, 500, 400).astype(float)
    nll *= chars / 100
    lo, hi, sd = bootstrap_ratio(nll, chars, seed="x")
    r = nll.sum() / chars.sum()
    assert lo < r < hi and sd > 0
    lo4, hi4, _ = bootstrap_ratio(nll[:40], chars[:40], seed="x")
    assert hi4 - lo4 > hi - lo  # fewer documents, wider interval
    assert bootstrap_ratio(nll, chars, seed="x") == (lo, hi, sd)  # seeded
    assert bootstrap_ratio([3.0], [2.0]) == (1.5, 1.5, 0.0)


def test_unigram_floor_of_a_mixture(tmp_path: Path) -> None:
    from kamado.data.config import MixtureConfig
    from kamado.data.unigram import average_shares, mixture_unigram, save_unigram
    from kamado.eval.perplexity import load_unigram

    for name, toks in (("ja", [5, 5, 5, 6]), ("en", [7, 7, 8, 8])):
        (tmp_path / name).mkdir()
        np.asarray(toks * 100, dtype=np.uint16).tofile(tmp_path / name / "train.bin")
    (tmp_path / "pack.json").write_text(json.dumps({"dtype": "uint16", "sources": {
        "ja": {"lang": "ja", "train": "ja/train.bin"}, "en": {"lang": "en", "train": "en/train.bin"}}}))
    mix = MixtureConfig.model_validate({"stages": [{"start": 0.0, "weights": {"en": 1.0}},
                                                   {"start": 0.5, "weights": {"ja": 1.0}}]})
    assert average_shares(mix, {"ja": 400, "en": 400}, {"ja": "ja", "en": "en"}) == {"en": 0.5, "ja": 0.5}
    p, info = mixture_unigram(tmp_path, mix, vocab=10, alpha=0.5)
    assert p.sum() == pytest.approx(1.0) and p[5] > p[7] > p[6] > p[0] > 0
    assert p[5] == pytest.approx(0.5 * 300.5 / 405 + 0.5 * 0.5 / 405)  # ja counts + en smoothing
    model = tmp_path / "model"
    model.mkdir()
    save_unigram(model, p, info)
    assert np.allclose(np.exp(load_unigram(model)), p) and load_unigram(tmp_path / "nothing") is None
    assert json.loads((model / "kamado_unigram.json").read_text())["shares"] == {"en": 0.5, "ja": 0.5}
    assert math.isfinite(float(load_unigram(model).min()))


def test_ppl_max_tokens_is_refused_with_its_replacement() -> None:
    from kamado.eval.config import EvalConfig

    with pytest.raises(ValueError, match="ppl_max_chars"):
        EvalConfig.model_validate({"ppl_max_tokens": 6000})


def test_normal_form_folds_the_text_before_it_is_counted(tmp_path: Path) -> None:
    """ppl_normal_form: every model is scored on the same folded characters (half-width kana composed,
    full-width digits narrowed), counted after folding; identity leaves the text as written."""

    class ByChar:
        bos_token_id = None

        def __call__(self, texts, **kw):
            return {"input_ids": [[ord(c) % 1000 for c in t] for t in texts]}

    f = tmp_path / "web.txt"
    f.write_text("ﾃﾞｰﾀは１２３件。\n（注）カタカナ\n", encoding="utf-8")
    raw = build_docs([str(f)], ByChar(), None, max_chars=10**6, seed=1)
    folded = build_docs([str(f)], ByChar(), None, max_chars=10**6, seed=1, normal_form="nfkc_ja")
    assert sum(d.chars for d in raw) == len(f.read_text(encoding="utf-8"))
    assert sorted(d.chars for d in folded) == sorted([len("データは123件。\n"), len("(注)カタカナ\n")])
