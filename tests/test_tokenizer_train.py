"""Tokenizer: SentencePiece training on real data, exact HF export, stats and the CLI contract."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kamado.config import KamadoError
from kamado.corpus.docs import resolve_inputs
from kamado.tokenizer.config import TokenizerConfig
from kamado.tokenizer.train import collect_sample, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
KAMADO = [sys.executable, "-m", "kamado.cli"]
SAMPLES = [
    "吾輩は猫である。名前はまだ無い。",
    "𠮷野家で鰻重を食べた🍣！ＡＢＣ１２３ ｶﾀｶﾅ",
    "The quick brown fox, 2024-10-10.",
    "改行\nと\tタブ",
    "髙﨑さんの「﨑」は異体字です。",
    "  two leading spaces, trailing  \n\n",
    "a  b   c\r\nd\u3000全角スペース",
    "literal specials: <unk> <s> </s> <pad> <0x41> <0x0A>",
    "絵文字👨‍👩‍👧‍👦と⚠️と🇯🇵",
    "",
    " ",
    "\n",
]
INPUTS = ["ja-wikipedia", "aozora", "wikitext2", "alice"]
SMALL = TokenizerConfig(vocab_size=3000, sample_chars=300_000, character_coverage=0.995,
                        weights={"ja": 0.6, "en": 0.4}, heldout_chars=50_000)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    out = tmp_path_factory.mktemp("tok")
    counts = train_tokenizer(resolve_inputs(INPUTS, data_root), SMALL, out, seed=7)
    assert counts["vocab_size"] == 3000
    return out


def _sp(tok_dir: Path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))


def test_autotokenizer_loads_offline_with_specials_and_chat_template(tok_dir: Path) -> None:
    from transformers import AutoTokenizer

    import kamado.tokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    assert len(tok) == 3000
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 3)
    assert tok.encode("テスト", add_special_tokens=True) == tok.encode("テスト", add_special_tokens=False)
    chat = tok.apply_chat_template([{"role": "user", "content": "こんにちは"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat.startswith("<s>") and "こんにちは" in chat
    assert type(kamado.tokenizer.load(tok_dir)).__name__ == type(tok).__name__
    with pytest.raises(KamadoError, match="not a tokenizer folder"):
        kamado.tokenizer.load(tok_dir / "nope")


def test_samples_round_trip_and_match_sentencepiece(tok_dir: Path) -> None:
    from kamado.tokenizer import load

    tok, sp = load(tok_dir), _sp(tok_dir)
    for s in SAMPLES:
        ids_sp = sp.encode(s)
        ids_hf = tok.encode(s, add_special_tokens=False, split_special_tokens=True)
        assert ids_hf == ids_sp, s
        assert sp.decode(ids_sp) == s
        assert tok.decode(ids_hf) == s
        # the default encode (special strings recognised) still round-trips
        assert tok.decode(tok.encode(s, add_special_tokens=False)) == s
    # rare kanji and emoji go through byte pieces, not <unk>
    ids = sp.encode("𠮷🍣")
    assert sp.unk_id() not in ids and all(sp.is_byte(i) for i in ids)
    # digits are split
    assert [sp.id_to_piece(i) for i in sp.encode("2024")] == ["2", "0", "2", "4"]


def test_sample_follows_the_weights(data_root: Path) -> None:
    cfg = SMALL.model_copy(update={"weights": {"ja": 0.25, "en": 0.75}})
    s = collect_sample(resolve_inputs(INPUTS, data_root), cfg, seed=1)
    ja = sum(v for k, v in s.chars.items() if s.langs[k] == "ja")
    en = sum(v for k, v in s.chars.items() if s.langs[k] == "en")
    assert abs(ja / (ja + en) - 0.25) < 0.05
    assert set(s.heldout) == {"ja", "en"}
    with pytest.raises(KamadoError, match="neither a source nor a language"):
        collect_sample(resolve_inputs(INPUTS, data_root), SMALL.model_copy(update={"weights": {"fr": 1.0}}))


def test_bpe_model_is_exact_too(tmp_path: Path, data_root: Path) -> None:
    from kamado.tokenizer import load

    cfg = SMALL.model_copy(update={"model_type": "bpe", "vocab_size": 4000, "sample_chars": 150_000})
    train_tokenizer(resolve_inputs(["ja-wikipedia", "alice"], data_root), cfg, tmp_path, seed=3)
    tok, sp = load(tmp_path), _sp(tmp_path)
    for s in SAMPLES:
        assert tok.encode(s, add_special_tokens=False, split_special_tokens=True) == sp.encode(s)
        assert tok.decode(tok.encode(s, add_special_tokens=False)) == s


def test_small_vocabulary_on_japanese_spells_rare_characters_in_bytes(tmp_path: Path, data_root: Path) -> None:
    from kamado.tokenizer import load

    cfg = TokenizerConfig(vocab_size=800, sample_chars=150_000)  # thousands of kanji, 800 pieces
    logs: list[str] = []
    train_tokenizer(resolve_inputs(["ja-wikipedia", "alice"], data_root), cfg, tmp_path, log=logs.append)
    assert any("rare characters left out" in m for m in logs)
    tok, sp = load(tmp_path), _sp(tmp_path)
    assert len(tok) == 800
    for s in SAMPLES:
        assert tok.encode(s, add_special_tokens=False, split_special_tokens=True) == sp.encode(s)
        assert tok.decode(tok.encode(s, add_special_tokens=False)) == s


def _all_text(root: Path) -> list[str]:
    """Every string in the data root: JSON values of .jsonl/.json files, plain text files in chunks."""
    out: list[str] = []

    def walk(v: object) -> None:
        if isinstance(v, str):
            if v:
                out.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.suffix == ".md":
            continue
        raw = gzip.open(p, "rb").read() if p.suffix == ".gz" else p.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        if ".jsonl" in p.name:
            for line in text.split("\n"):
                if line.strip():
                    try:
                        walk(json.loads(line))
                    except json.JSONDecodeError:  # deliberately broken records: their raw text
                        out.append(line)
        elif p.suffix == ".json":
            walk(json.loads(text))
        else:
            out += [text[i:i + 20_000] for i in range(0, len(text), 20_000)]
    return out


@pytest.mark.slow
def test_round_trip_on_all_data_root_text(tok_dir: Path, data_root: Path) -> None:
    from kamado.tokenizer import load

    texts = _all_text(data_root) + SAMPLES
    assert len(texts) > 50_000
    tok, sp = load(tok_dir), _sp(tok_dir)
    ids_sp = sp.encode(texts, num_threads=2)
    ids_hf = tok(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    bad_ids = [t for t, a, b in zip(texts, ids_sp, ids_hf, strict=True) if a != b]
    assert not bad_ids, f"{len(bad_ids)} texts tokenize differently, e.g. {bad_ids[0][:80]!r}"
    dec_hf = tok.batch_decode(ids_hf)
    dec_sp = sp.decode(ids_sp, num_threads=2)
    bad = [t for t, a, b in zip(texts, dec_hf, dec_sp, strict=True) if not (a == t and b == t)]
    assert not bad, f"{len(bad)} texts do not round-trip, e.g. {bad[0][:80]!r}"


@pytest.mark.slow
def test_cli_train_and_stats(tmp_path: Path, tok_dir: Path) -> None:
    env = os.environ | {"KAMADO_QUIET": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    out = tmp_path / "tok"
    r = subprocess.run(KAMADO + ["tokenizer", "train", "ja=ja-wikipedia", "en=alice", "--vocab-size", "2500",
                                 "--sample-chars", "120000", "--weights", "ja=0.5,en=0.5", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    check = ("from transformers import AutoTokenizer; import sys; t = AutoTokenizer.from_pretrained(sys.argv[1]); "
             "s = '𠮷野家で鰻重を食べた🍣！'; assert t.decode(t.encode(s, add_special_tokens=False)) == s; print(len(t))")
    r2 = subprocess.run([sys.executable, "-c", check, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0 and r2.stdout.strip() == "2500", r2.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"]["vocab_size"] == 2500 and set(man["counts"]["sources"]) == {"ja", "en"}
    r = subprocess.run(KAMADO + ["tokenizer", "stats", str(tok_dir), str(out), "--text", "fineweb2-ja", "--text",
                                 "gutenberg-holmes", "--max-chars", "20000"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "chars/tok" in r.stderr and "tokens B/A" in r.stderr and "│ ja" in r.stderr and "│ en" in r.stderr
    r = subprocess.run(KAMADO + ["tokenizer", "train", "alice", "--weights", "xx=1", "--out", str(tmp_path / "b")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "neither a source nor a language" in r.stderr
