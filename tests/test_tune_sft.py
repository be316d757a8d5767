"""Instruction data prep: chat template round trip, prompt masking exactness, packing, the BatchSource.

Uses a real SentencePiece tokenizer trained here on the dolly-ja records and loaded by AutoTokenizer.
``build_tokenizer``/``build_model`` are also used by the other tune and report tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DOLLY = "ja_instruct/databricks-dolly-15k-ja_first3000.jsonl"


_BUILT: dict[tuple[str, int], Path] = {}  # one SentencePiece training per session, copied for each caller


def build_tokenizer(out: Path, data_root: Path, vocab: int = 2000) -> Path:
    """A unigram SentencePiece model on dolly-ja, exported as an AutoTokenizer folder."""
    import shutil

    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    key = (str(data_root), vocab)
    if key in _BUILT and (_BUILT[key] / "tokenizer.model").is_file():
        shutil.copytree(_BUILT[key], out / "tok")
        return out / "tok"
    lines = []
    with open(data_root / DOLLY, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 1000:
                break
            r = json.loads(line)
            lines += [r["instruction"], r["input"], r["output"]]
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(x.replace("\n", " ")[:2000] for x in lines if x), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "sp"), vocab_size=vocab, model_type="unigram",
        byte_fallback=True, normalization_rule_name="identity", character_coverage=0.98, unk_id=0, bos_id=1,
        eos_id=2, pad_id=3, user_defined_symbols=["\n"], num_threads=2, minloglevel=2)
    tok = out / "tok"
    tok.mkdir(exist_ok=True)
    (out / "sp.model").rename(tok / "tokenizer.model")
    (tok / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "TokenizersBackend", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>"}))
    _BUILT[key] = tok
    return tok


def build_model(out: Path, tok_dir: Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A tiny random-init LlamaForCausalLM saved as an HF folder with the tokenizer files."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 3,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def tok(tmp_path_factory, data_root):
    from transformers import AutoTokenizer

    from kamado.tune.templates import set_chat_template

    d = build_tokenizer(tmp_path_factory.mktemp("tok"), data_root)
    return set_chat_template(AutoTokenizer.from_pretrained(str(d)))


CHAT = [{"role": "system", "content": "あなたは親切なアシスタントです。"},
        {"role": "user", "content": "日本の首都は？"},
        {"role": "assistant", "content": "東京です。"},
        {"role": "user", "content": "Thanks! And France?"},
        {"role": "assistant", "content": "Paris です。\n以上。"}]


def test_template_round_trip(tok, tmp_path):
    """The Jinja template equals the Python renderer and survives save/load of the tokenizer."""
    from transformers import AutoTokenizer

    from kamado.tune.templates import CHAT_TEMPLATE, render

    text = tok.apply_chat_template(CHAT, tokenize=False)
    assert text == render(CHAT)
    assert text.startswith("<s>あなたは親切なアシスタントです。\n\n### 指示:\n日本の首都は？\n\n### 応答:\n東京です。</s>")
    gen = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert gen.endswith("### 応答:\n") and text.startswith(gen)
    tok.save_pretrained(str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again.chat_template == CHAT_TEMPLATE
    assert again.apply_chat_template(CHAT, tokenize=False) == text
    ids = again.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    assert list(ids) == again(text, add_special_tokens=False)["input_ids"]
    # SentencePiece's dummy prefix adds a "▁" after each special token; otherwise the text comes back exactly
    assert again.decode(ids).replace("<s> ", "<s>").replace("</s> ", "</s>") == text


def test_masking_is_exact(tok):
    """Labels are -100 on every prompt token and equal the ids on exactly the answers + EOS."""
    from kamado.tune.sft import IGNORE, encode_chat

    ex = encode_chat(tok, CHAT)
    assert len(ex.ids) == len(ex.labels)
    target = [i for i, lab in zip(ex.ids, ex.labels, strict=True) if lab != IGNORE]
    assert all(lab in (IGNORE, i) for i, lab in zip(ex.ids, ex.labels, strict=True))
    assert tok.decode(target) == "東京です。</s>Paris です。\n以上。</s>"
    # the prompt part (everything before the first answer) has no labels at all
    prompt = tok.apply_chat_template(CHAT[:2], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ex.ids[: len(prompt)] == list(prompt)
    assert set(ex.labels[: len(prompt)]) == {IGNORE}
    # agrees with transformers' own assistant mask from the {% generation %} markers
    hf = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert hf["assistant_masks"] == [int(lab != IGNORE) for lab in ex.labels]


def test_records_and_prepare(tok, data_root, tmp_path):
    """dolly-ja, generic instruction and messages JSONL all load; split, truncation and packing add up."""
    from kamado.catalog import resolve
    from kamado.tune.sft import IGNORE, SFTBatches, pack, prepare, read_chats

    chats, st = read_chats(resolve("dolly-ja", data_root), limit=50)
    assert len(chats) == 50 and st["skipped"] == 0
    assert chats[0][0]["role"] == "user" and chats[0][-1]["role"] == "assistant"
    assert "ヴァージン" in chats[0][0]["content"]  # the input (context) is part of the user turn
    generic = tmp_path / "generic.jsonl"
    generic.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"instruction": "足し算して", "input": "1+1", "output": "2"},
        {"messages": CHAT},
        {"instruction": "空の答え", "output": ""},
        {"foo": 1}]) + "\n", encoding="utf-8")
    chats, st = read_chats(generic)
    assert len(chats) == 2 and st["skipped"] == 2
    assert chats[0][0]["content"] == "足し算して\n\n1+1"

    data = prepare(tok, [("dolly-ja", resolve("dolly-ja", data_root)), ("generic", generic)], 128,
                   valid_fraction=0.1, max_examples=200, seed=3)
    s = data.stats
    assert s["records"] == 202
    assert s["train_examples"] + s["valid_examples"] + s["dropped"] == 202
    assert s["truncated"] > 0 and all(len(e.ids) <= 128 for e in data.train + data.valid)
    assert s["train_target_tokens"] == sum(e.targets for e in data.train)
    again = prepare(tok, [("dolly-ja", resolve("dolly-ja", data_root))], 128, valid_fraction=0.1,
                    max_examples=200, seed=3)
    assert [e.ids for e in again.valid] == [e.ids for e in data.valid if e.source == "dolly-ja"]

    rows = pack(data.train, 128, packing=True, seed=1)
    assert sum(len(r.ids) for r in rows) == s["train_tokens"]
    assert sum(r.targets for r in rows) == s["train_target_tokens"]
    assert len(rows) < len(data.train) and all(len(r.ids) <= 128 for r in rows)

    src = SFTBatches(rows, micro_batch=4, pad_id=tok.pad_token_id, seed=7)
    b = src.next_batch()
    assert b["input_ids"].shape == b["labels"].shape and b["input_ids"].shape[0] == 4
    pad = b["input_ids"] == tok.pad_token_id
    assert (b["labels"][pad] == IGNORE).all()
    state = src.state_dict()
    nxt = [src.next_batch() for _ in range(3)]
    other = SFTBatches(rows, micro_batch=4, pad_id=tok.pad_token_id, seed=7)
    other.load_state_dict(json.loads(json.dumps(state)))
    for a, c in zip(nxt, [other.next_batch() for _ in range(3)], strict=True):
        assert (a["input_ids"] == c["input_ids"]).all() and (a["labels"] == c["labels"]).all()
    # two ranks see disjoint rows of the same epoch
    r0 = SFTBatches(rows, 4, tok.pad_token_id, seed=7, rank=0, world_size=2).next_batch()["input_ids"]
    r1 = SFTBatches(rows, 4, tok.pad_token_id, seed=7, rank=1, world_size=2).next_batch()["input_ids"]
    assert not any((r0[i] == r1[j]).all() for i in range(4) for j in range(4) if r0.shape == r1.shape)


def test_bad_jsonl_names_the_line(tmp_path):
    from kamado.config import KamadoError
    from kamado.tune.sft import read_chats

    p = tmp_path / "bad.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n{not json\n', encoding="utf-8")
    with pytest.raises(KamadoError, match=r"bad.jsonl:2"):
        read_chats(p)
