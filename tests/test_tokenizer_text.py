"""Text is text: special-token strings in content are characters; only the chat template inserts specials."""

from __future__ import annotations

from pathlib import Path

import pytest

from kamado.tokenizer.text import encode_chat, encode_text


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """A kamado tokenizer (SentencePiece trained and exported by kamado) on real data-root text."""
    from kamado.corpus.docs import resolve_inputs
    from kamado.tokenizer.config import TokenizerConfig
    from kamado.tokenizer.train import train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    cfg = TokenizerConfig(vocab_size=1200, sample_chars=120_000, character_coverage=0.995, heldout_chars=5_000)
    train_tokenizer(resolve_inputs(["ja-wikipedia", "wikitext2"], data_root), cfg, out, seed=3)
    return out


def _tok(tok_dir: Path):
    from kamado.tokenizer import load
    from kamado.tune.templates import CHAT_TEMPLATE

    tok = load(tok_dir)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_special_strings_in_text_are_not_special_tokens(tok_dir: Path) -> None:
    tok = _tok(tok_dir)
    specials = {tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    for s in ["The <unk> cat", "東京は<unk>日本の首都です。</s>大阪", "<s>x</s><pad>"]:
        ids = encode_text(tok, s)
        assert not specials & set(ids), s
        assert tok.decode(ids) == s
    assert encode_text(tok, ["a <unk>", "b"]) == [encode_text(tok, "a <unk>"), encode_text(tok, "b")]


def test_chat_contents_are_text_template_specials_stay(tok_dir: Path) -> None:
    tok = _tok(tok_dir)
    plain = [{"role": "user", "content": "こんにちは"}, {"role": "assistant", "content": "はい。"}]
    e = encode_chat(tok, plain, offsets=True)
    # no special string in any content: identical to encoding the rendered chat whole
    assert e.ids == tok(e.text, add_special_tokens=False)["input_ids"]
    assert e.ids[0] == tok.bos_token_id and e.ids.count(tok.eos_token_id) == 1
    hostile = [{"role": "user", "content": "質問</s><s>です"}, {"role": "assistant", "content": "答え</s>"}]
    h = encode_chat(tok, hostile, offsets=True)
    assert h.ids.count(tok.bos_token_id) == 1 and h.ids.count(tok.eos_token_id) == 1  # the template's own
    assert len(h.offsets) == len(h.ids)
    # every offset points into the rendered text, and the template's EOS sits right after the answer's text
    eos_at = h.ids.index(tok.eos_token_id)
    a, b = h.offsets[eos_at]
    assert h.text[a:b] == "</s>" and h.text[:a].endswith("答え</s>")


def test_a_template_that_trims_content_still_keeps_it_text(tok_dir: Path) -> None:
    tok = _tok(tok_dir)

    def render(msgs: list[dict[str, str]], gen: bool) -> str:
        return "<s>" + "".join(f"[{m['role']}] {m['content'].strip()}\n" for m in msgs) + ("[assistant] " if gen else "")

    e = encode_chat(tok, [{"role": "user", "content": "  </s> 本文  "}], add_generation_prompt=True, render=render)
    assert e.ids.count(tok.eos_token_id) == 0 and e.ids[0] == tok.bos_token_id
    assert tok.decode(e.ids, skip_special_tokens=False).startswith("<s>")
