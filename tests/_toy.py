"""Test helper: a tiny random-init LLaMA + SentencePiece tokenizer built from real data-root text, for the tests.

``build_toy_model(dir, data_root)`` trains a small SentencePiece unigram tokenizer on Japanese Wikipedia
paragraphs and English text from the data root, saves it as a Hugging Face tokenizer folder
(``tokenizer.model`` + ``tokenizer_config.json`` with ``TokenizersBackend``, which matches SentencePiece
exactly under transformers 5) and a randomly initialised ``LlamaForCausalLM`` beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### 指示:\n{{ m['content'] }}\n\n"
    "{% else %}### 応答:\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### 応答:\n{% endif %}"
)


def _sample_text(data_root: Path, chars: int) -> list[str]:
    from kamado.catalog import resolve
    from kamado.jsonl import iter_jsonl

    lines: list[str] = []
    n = 0
    for rec in iter_jsonl(resolve("ja-wikipedia", data_root)):
        for para in rec["text"].split("\n"):
            if para.strip():
                lines.append(para.strip())
                n += len(para)
        if n > chars:
            break
    en = resolve("wikitext2", data_root).read_text(encoding="utf-8")[: chars // 2]
    lines += [s.strip() for s in en.split("\n") if s.strip()]
    return lines


def save_tokenizer(sp_model: Path, out: Path, chat_template: str | None = CHAT_TEMPLATE) -> None:
    """Write a Hugging Face tokenizer folder around a SentencePiece model (exact ids under transformers 5)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(Path(sp_model).read_bytes())
    cfg = {"tokenizer_class": "TokenizersBackend", "bos_token": "<s>", "eos_token": "</s>",
           "unk_token": "<unk>", "pad_token": "<pad>", "add_bos_token": True, "add_eos_token": False,
           "model_max_length": 1 << 20}
    if chat_template:
        cfg["chat_template"] = chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}), encoding="utf-8")


def build_toy_model(out: Path, data_root: Path | None = None, *, vocab_size: int = 3000, hidden: int = 64,
                    layers: int = 2, heads: int = 4, intermediate: int | None = None, max_len: int = 1024, seed: int = 0,
                    chat_template: str | None = CHAT_TEMPLATE, text_chars: int = 300_000) -> Path:
    """Build (or reuse) a toy HF LLaMA folder at ``out``; returns ``out``."""
    import sentencepiece as spm
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kamado.catalog import data_root as _root

    out = Path(out)
    if (out / "config.json").is_file() and (out / "tokenizer.model").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(_sample_text(_root(data_root), text_chars)), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp / "sp"), vocab_size=vocab_size, model_type="unigram",
        character_coverage=0.99, byte_fallback=True, split_digits=True, num_threads=2,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, normalization_rule_name="identity",
        remove_extra_whitespaces=False, minloglevel=2, seed_sentencepiece_size=200_000,
    )
    save_tokenizer(tmp / "sp.model", tmp, chat_template)
    for p in ("corpus.txt", "sp.model", "sp.vocab"):
        (tmp / p).unlink()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate or hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_len, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out
