"""The tokenizer's normal form: the corpus chain's NFKC folding, applied by SentencePiece and the HF export alike."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from kamado.config import KamadoError
from kamado.corpus.docs import InputSpec, resolve_inputs
from kamado.corpus.text.normalize import nfkc_ja
from kamado.tokenizer import normal
from kamado.tokenizer.config import TokenizerConfig
from kamado.tokenizer.text import encode_text
from kamado.tokenizer.train import train_tokenizer

RAW = ["（テスト）ｶﾀｶﾅ１２３ＡＢＣ", "ｺﾒﾝﾄ送信　ﾒｰﾙｱﾄﾞﾚｽ：ｔｅｓｔ＠ｅｘａｍｐｌｅ．ｃｏｍ", "第１０回（２０２３年）ﾃﾞｰﾀ",
       "Ｗｉｋｉｐｅｄｉａ（ウィキペディア）", "ﾊﾟｿｺﾝを１台買った！？", "ﾌﾟﾁﾄﾏﾄとﾊﾟｾﾘ", "か\u3099と\uff76\uff9e"]


@pytest.fixture(scope="module")
def nfkc_tok(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    out = tmp_path_factory.mktemp("tok-nfkc")
    cfg = TokenizerConfig(vocab_size=1500, sample_chars=150_000, character_coverage=0.995, heldout_chars=5_000,
                          normal_form="nfkc_ja")
    counts = train_tokenizer(resolve_inputs(["ja-wikipedia", "wikitext2"], data_root), cfg, out, seed=5)
    assert counts["normal_form"] == "nfkc_ja"
    return out


def test_rules_are_the_corpus_fold(data_root: Path) -> None:
    """Longest-match application of the rule equals the corpus step's nfkc_ja on real web text."""
    from kamado.catalog import resolve
    from kamado.jsonl import iter_jsonl

    texts = [r["text"] for r, _ in zip(iter_jsonl(resolve("mc4-ja-labeled", data_root)), range(300), strict=False)]
    texts += RAW
    changed = [t for t in texts if nfkc_ja(t) != t]
    assert len(changed) > 20
    assert [normal.apply("nfkc_ja", t) for t in texts] == [nfkc_ja(t).replace("\r\n", "\n") for t in texts]
    assert normal.apply("nfkc", "…ｶﾞ") == unicodedata.normalize("NFKC", "…ｶﾞ")
    assert normal.apply("nfkc_ja", "…ｶﾞ") == "…ガ"  # the Japanese exceptions stay
    assert normal.rules("identity") == ()


def test_raw_and_folded_text_get_the_same_ids(nfkc_tok: Path) -> None:
    import sentencepiece as spm

    from kamado.tokenizer import load

    tok = load(nfkc_tok)
    sp = spm.SentencePieceProcessor(model_file=str(nfkc_tok / "tokenizer.model"))
    for raw in RAW:
        norm = unicodedata.normalize("NFKC", raw)
        ids = encode_text(tok, raw)
        assert ids == encode_text(tok, norm), raw
        assert sp.encode(raw) == ids, raw  # SentencePiece and the HF export fold alike
    para = "東京都は日本の首都であり、約1400万人が暮らしている。2020年には夏季オリンピックの開催地に選ばれた。"
    assert tok.decode(encode_text(tok, para)) == para
    info = json.loads((nfkc_tok / "kamado_tokenizer.json").read_text(encoding="utf-8"))
    assert info["normal_form"] == "nfkc_ja"


def test_identity_keeps_full_width(tmp_path: Path, data_root: Path) -> None:
    from kamado.tokenizer import load

    cfg = TokenizerConfig(vocab_size=800, sample_chars=60_000, character_coverage=0.995, heldout_chars=2_000)
    counts = train_tokenizer(resolve_inputs(["ja-wikipedia"], data_root), cfg, tmp_path, seed=5)
    assert counts["normal_form"] == "identity"  # raw inputs: no chain, no folding
    tok = load(tmp_path)
    assert tok.decode(encode_text(tok, "ＡＢＣ１２３")) == "ＡＢＣ１２３"


def test_auto_follows_the_chains_and_refuses_a_mix() -> None:
    a = InputSpec("corpus:a", [], source="a", normal_form="nfkc_ja")
    b = InputSpec("corpus:b", [], source="b", normal_form="nfkc_ja")
    c = InputSpec("corpus:c", [], source="c", normal_form="identity")
    assert normal.resolve("auto", [a, b]) == "nfkc_ja"
    assert normal.resolve("auto", [InputSpec("x", [])]) == "identity"
    assert normal.resolve("nfkc", [a, c]) == "nfkc"  # set explicitly: no check
    with pytest.raises(KamadoError, match=r"identity: c; nfkc_ja: a, b"):
        normal.resolve("auto", [a, b, c])


def test_chain_normal_forms() -> None:
    from kamado.corpus.config import default_chain

    assert default_chain("default").normal_form() == "nfkc_ja"
    assert default_chain("hojichar-compat").normal_form() == "nfkc"


def test_same_training_same_bytes_in_another_folder(nfkc_tok: Path, tmp_path: Path, data_root: Path) -> None:
    """The rule file is a temporary file: its path is not kept in the model, so a tokenizer trained again (another
    run folder) is byte-identical and the stages after it keep their fingerprints."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    cfg = TokenizerConfig(vocab_size=1500, sample_chars=150_000, character_coverage=0.995, heldout_chars=5_000,
                          normal_form="nfkc_ja")
    train_tokenizer(resolve_inputs(["ja-wikipedia", "wikitext2"], data_root), cfg, tmp_path / "again", seed=5)
    a, b = (nfkc_tok / "tokenizer.model").read_bytes(), (tmp_path / "again" / "tokenizer.model").read_bytes()
    m = pb.ModelProto()
    m.ParseFromString(a)
    assert m.normalizer_spec.normalization_rule_tsv == "" and m.normalizer_spec.precompiled_charsmap
    assert a == b
