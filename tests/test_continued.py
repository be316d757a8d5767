"""Continued pretraining: tokenizer extension (tokenizer.extend), init_from checks, vocabulary resize, a short run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kamado.config import KamadoError


def _proto(model: bytes):
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(model)
    return m


def _inputs(tok: Path) -> list:
    from kamado.corpus.docs import resolve_inputs

    top = tok.parent
    return resolve_inputs([f"ja={top / 'ja.jsonl'}", f"en={top / 'en.jsonl'}"])


@pytest.fixture(scope="module")
def extended(pack: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """(base tokenizer, tokenizer extended by 300 pieces, its counts)."""
    from kamado.tokenizer.config import ExtendConfig, TokenizerConfig
    from kamado.tokenizer.extend import extend_tokenizer

    _, tok = pack
    out = tmp_path_factory.mktemp("ext") / "tokenizer"
    cfg = TokenizerConfig(sample_chars=400_000, num_threads=2, extend=ExtendConfig(base=str(tok), add=300))
    counts = extend_tokenizer(_inputs(tok), cfg, out, tok / "tokenizer.model")
    return tok, out, counts


def test_extension_keeps_the_base_and_its_new_pieces_are_used(extended: tuple[Path, Path, dict],
                                                              data_root: Path) -> None:
    import sentencepiece as spm
    from conftest import wiki_paragraphs
    from transformers import AutoTokenizer

    base, ext, counts = extended
    a, b = _proto((base / "tokenizer.model").read_bytes()), _proto((ext / "tokenizer.model").read_bytes())
    assert len(b.pieces) == len(a.pieces) + 300
    assert [(p.piece, p.score, p.type) for p in b.pieces[:len(a.pieces)]] == [(p.piece, p.score, p.type)
                                                                              for p in a.pieces]
    assert b.normalizer_spec.SerializeToString() == a.normalizer_spec.SerializeToString()
    assert all(p.type == 1 for p in b.pieces[len(a.pieces):])  # NORMAL
    assert len({p.piece for p in b.pieces}) == len(b.pieces)  # nothing the base had is added again
    ta, tb = AutoTokenizer.from_pretrained(str(base)), AutoTokenizer.from_pretrained(str(ext))
    va, vb = ta.get_vocab(), tb.get_vocab()
    assert len(vb) == len(va) + 300 and all(vb[p] == i for p, i in va.items())
    for t in ("bos", "eos", "unk", "pad"):
        assert getattr(tb, f"{t}_token_id") == getattr(ta, f"{t}_token_id")
    sp = spm.SentencePieceProcessor(model_file=str(ext / "tokenizer.model"))
    texts = wiki_paragraphs(data_root, 40) + ["It was the best of times, it was the worst of times.",
                                              "ｶﾀｶﾅと（１２３）、東京都の人口。"]
    for t in texts:
        assert tb(t, add_special_tokens=False)["input_ids"] == sp.encode(t), t
    ids_a = [i for t in texts[:40] for i in ta(t, add_special_tokens=False)["input_ids"]]
    ids_b = [i for t in texts[:40] for i in tb(t, add_special_tokens=False)["input_ids"]]
    assert any(i >= len(va) for i in ids_b)  # the segmenter picks the appended pieces
    assert len(ids_b) < 0.97 * len(ids_a)
    assert counts["vocab_size"] == len(vb) and counts["base_vocab_size"] == len(va) and counts["added_pieces"] == 300
    assert counts["chars_per_token_ja"] > counts["base_chars_per_token_ja"]
    assert "base_chars_per_token_en" in counts


def test_extension_is_exact_or_refused(pack: tuple[Path, Path], tmp_path: Path) -> None:
    from kamado.tokenizer.config import ExtendConfig, TokenizerConfig
    from kamado.tokenizer.extend import base_model_path, extend_model

    _, tok = pack
    base = (tok / "tokenizer.model").read_bytes()
    cfg = TokenizerConfig(num_threads=2)
    assert extend_model(base, ["x"], 0, cfg) == base
    lines = ["東京都の人口は多い。", "大阪府の人口も多い。"] * 50
    with pytest.raises(KamadoError, match=r"tokenizer\.extend\.add"):
        extend_model(base, lines, 5000, cfg)
    with pytest.raises(KamadoError, match=r"tokenizer\.extend\.base"):
        base_model_path(tmp_path / "nope")
    assert base_model_path(tok.name, tok.parent) == tok / "tokenizer.model"
    with pytest.raises(ValueError):
        TokenizerConfig(extend=ExtendConfig(base="x", add=-1))


def test_bpe_extension_keeps_ids_and_matches_hf(pack: tuple[Path, Path], tmp_path: Path, data_root: Path) -> None:
    import sentencepiece as spm
    from conftest import wiki_paragraphs
    from transformers import AutoTokenizer

    from kamado.tokenizer.config import TokenizerConfig
    from kamado.tokenizer.export import export_hf
    from kamado.tokenizer.extend import extend_model
    from kamado.tokenizer.train import train_sentencepiece

    lines = wiki_paragraphs(data_root, 150)
    cfg = TokenizerConfig(vocab_size=1500, model_type="bpe", num_threads=2)
    base = train_sentencepiece(lines, cfg)
    ext = extend_model(base, lines, 100, cfg)
    a, b = _proto(base), _proto(ext)
    assert [p.piece for p in b.pieces[:len(a.pieces)]] == [p.piece for p in a.pieces]
    assert len(b.pieces) == len(a.pieces) + 100
    export_hf(ext, tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    sp = spm.SentencePieceProcessor(model_proto=ext)
    test = wiki_paragraphs(data_root, 170)[150:]
    for t in test:
        assert tok(t, add_special_tokens=False)["input_ids"] == sp.encode(t)
    assert any(i >= len(a.pieces) for t in test for i in sp.encode(t))


def _base_model(path: Path, tok: Path, vocab: int = 3000) -> Path:
    import shutil

    from kamado.model.presets import build_model, llama_config

    m = build_model(llama_config("micro", vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=3), seed=0)
    m.save_pretrained(str(path))
    for f in tok.iterdir():
        if f.is_file() and f.name.startswith(("tokenizer", "special")):
            shutil.copy(f, path / f.name)
    return path


def test_init_from_refuses_disagreeing_settings_and_missing_path(pack: tuple[Path, Path], tmp_path: Path) -> None:
    from kamado.recipe import check_inputs, parse_recipe
    from kamado.train.config import PretrainConfig
    from kamado.train.continued import base_config, check_agrees, check_tokenizer

    _, tok = pack
    hf = _base_model(tmp_path / "base", tok)
    conf = base_config(hf)
    check_agrees(PretrainConfig(init_from=str(hf)), conf, hf)  # no preset set: the base's architecture
    check_agrees(PretrainConfig.model_validate({"init_from": str(hf), "model": {"preset": "micro"}}), conf, hf)
    with pytest.raises(KamadoError, match=r"pretrain\.model\.preset: 'tiny' has hidden_size 256"):
        check_agrees(PretrainConfig.model_validate({"init_from": str(hf), "model": {"preset": "tiny"}}), conf, hf)
    with pytest.raises(KamadoError, match=r"pretrain\.model\.overrides\.num_hidden_layers"):
        check_agrees(PretrainConfig.model_validate({"model": {"overrides": {"num_hidden_layers": 3}}}), conf, hf)
    check_tokenizer(hf, tok)
    with pytest.raises(KamadoError, match="another id"):
        _other_tokenizer_refused(hf, tmp_path)  # a tokenizer that is not an extension of the model's
    r = parse_recipe({"tokenizer": {"extend": {"base": "no/tok", "add": 5}},
                      "pretrain": {"init_from": "no/such/model"}})
    with pytest.raises(KamadoError) as e:
        check_inputs(r, tmp_path, tmp_path)
    assert "pretrain.init_from" in str(e.value) and "tokenizer.extend.base" in str(e.value)


def _other_tokenizer_refused(hf: Path, tmp_path: Path) -> None:
    from kamado.tokenizer.export import export_hf
    from kamado.train.continued import check_tokenizer

    m = _proto((hf / "tokenizer.model").read_bytes())
    x, y = m.pieces[1000], m.pieces[1001]
    x.piece, y.piece = y.piece, x.piece  # two pieces trade ids
    check_tokenizer(hf, export_hf(m.SerializeToString(), tmp_path / "other"))


def test_resize_keeps_old_rows_bit_identical(pack: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from kamado.model.presets import build_model, llama_config
    from kamado.train.continued import resize

    for how in ("mean", "decompose"):
        m = build_model(llama_config("micro", vocab_size=500), seed=0)
        e0, h0 = m.get_input_embeddings().weight.detach().clone(), m.get_output_embeddings().weight.detach().clone()
        decomp = [[5, 7], [9], []]
        assert resize(m, 503, how, decomp) == 3
        e, h = m.get_input_embeddings().weight, m.get_output_embeddings().weight
        assert m.config.vocab_size == 503 and e.shape[0] == 503 and h.shape[0] == 503
        assert torch.equal(e[:500], e0) and torch.equal(h[:500], h0)
        for w, w0 in ((e, e0), (h, h0)):
            mean = w0.double().mean(0).float()
            if how == "mean":
                assert torch.allclose(w[500:], mean.expand(3, -1), atol=1e-7)
            else:
                assert torch.allclose(w[500], w0[[5, 7]].double().mean(0).float(), atol=1e-7)
                assert torch.allclose(w[501], w0[9]) and torch.allclose(w[502], mean, atol=1e-7)


def test_two_step_continued_run_from_a_saved_model(extended: tuple[Path, Path, dict], pack: tuple[Path, Path],
                                                   tmp_path: Path, one_thread: None) -> None:
    import torch
    from safetensors.torch import load_file

    from kamado.corpus.docs import resolve_inputs
    from kamado.data.config import PackConfig
    from kamado.data.pack import pack as do_pack
    from kamado.stage import run_stage_alone
    from kamado.train.config import PretrainConfig
    from kamado.train.continued import decompositions

    base_tok, ext, _ = extended
    top = base_tok.parent
    hf = _base_model(tmp_path / "base", base_tok)
    pk = tmp_path / "data"
    do_pack(resolve_inputs([f"ja={top / 'ja.jsonl'}", f"en={top / 'en.jsonl'}"]), ext, pk,
            PackConfig(workers=1, valid_fraction=0.05))
    cfg = PretrainConfig.model_validate({
        "init_from": "base", "new_rows": "decompose",
        "train": {"steps": 2, "batch_size": 2, "seq_len": 32, "eval_every": 100, "eval_batches": 1,
                  "ckpt_every": 100, "precision": "fp32", "optimizer": {"lr": 1e-9, "min_lr": 0.0}, "warmup_steps": 0}})
    out = tmp_path / "pt"
    counts = run_stage_alone("pretrain", cfg, out, {"data": pk, "tokenizer": ext}, recipe_dir=tmp_path, quiet=True)
    assert counts["steps"] == 2
    conf = json.loads((out / "hf" / "config.json").read_text())
    assert conf["vocab_size"] == 3300 and conf["hidden_size"] == 64
    res = json.loads((out / "pretrain.json").read_text())
    assert res["init_from"]["path"] == str(hf.resolve()) and len(res["init_from"]["digest"]) == 64
    # with a vanishing learning rate the base rows are (nearly) the base's and new rows their decompositions' mean
    w0 = load_file(str(hf / "model.safetensors"))["model.embed_tokens.weight"]
    w = load_file(str(out / "hf" / "model.safetensors"))["model.embed_tokens.weight"]
    assert torch.allclose(w[:3000], w0, atol=1e-6)
    d = decompositions((ext / "tokenizer.model").read_bytes(), 3000, range(3000, 3300))
    assert all(d) and torch.allclose(w[3000], w0[d[0]].mean(0), atol=1e-5)
