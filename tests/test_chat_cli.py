"""``kamado chat`` on a real tiny model folder (SentencePiece tokenizer + kamado's chat template + LLaMA)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_tune_sft import build_model, build_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data_root) -> Path:
    from transformers import AutoTokenizer

    from kamado.tune.templates import set_chat_template

    root = tmp_path_factory.mktemp("chat")
    out = build_model(root / "hf", build_tokenizer(root / "tok", data_root), hidden=32, layers=1)
    set_chat_template(AutoTokenizer.from_pretrained(str(out))).save_pretrained(str(out))
    return out


def test_streamed_reply_equals_greedy_generation(model_dir, one_thread):
    """The streamed pieces make the same text as eval's batch generate() on the same templated prompt."""
    from kamado.cli.chat import Chat
    from kamado.eval.generate import generate
    from kamado.eval.harness import load_model

    model, tok = load_model(model_dir)
    c = Chat(model, tok, system="短く答えてください。", max_new_tokens=12, temperature=0.0, top_p=1.0, seed=0)
    pieces = list(c.reply("日本の首都は？"))
    text = "".join(pieces)
    assert c.messages == [{"role": "user", "content": "日本の首都は？"}, {"role": "assistant", "content": text}]
    prompt = tok.apply_chat_template([{"role": "system", "content": "短く答えてください。"},
                                      {"role": "user", "content": "日本の首都は？"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt.endswith("### 応答:\n")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ref = generate(model, tok, [ids], max_new_tokens=12, temperature=0.0, stop=["### 指示:"])[0]
    assert text == ref.text.rstrip()
    # the second turn sees the first one in its prompt
    second = c.prompt_ids()
    assert tok.decode(second).count("日本の首都は？") == 1
    c.messages.append({"role": "user", "content": "もう一度"})
    assert tok.decode(c.prompt_ids()).count("### 指示:") == 2


@pytest.mark.slow  # 22 s: a `kamado chat` subprocess (test-fast run on a loaded box)
def test_chat_command_reads_stdin_when_not_a_terminal(model_dir):
    """Each input line is a turn, /commands work, /exit stops; replies go to stdout one per line. The stage
    folder is given (its hf/ subfolder is the model)."""
    kamado = Path(sys.executable).with_name("kamado")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(kamado), "chat", str(model_dir.parent), "--temperature", "0", "--max-new-tokens", "6",
                        "--system", "あなたは親切です。"],
                       input="こんにちは\n\n/temperature 0.8\n/reset\n/system\nもう一度\n/exit\nnot read\n",
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout.splitlines()) == 2, r.stdout
    assert "(temperature 0.8)" in r.stderr and "(conversation cleared)" in r.stderr
    assert "(system prompt cleared; conversation cleared)" in r.stderr


def test_chat_help_and_missing_model(tmp_path):
    kamado = Path(sys.executable).with_name("kamado")
    r = subprocess.run([str(kamado), "chat", "--help"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0 and "/reset" in r.stdout
    # help paragraphs reflow to the terminal width instead of keeping the docstring's line breaks
    r = subprocess.run([str(kamado), "serve", "--help"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "160"})
    assert "(kamado's tune template when it has none), exactly as `kamado chat`; text" in r.stdout
    assert "   kamado serve runs/tiny/tune/full/hf --port 8000" in r.stdout  # examples keep their lines
    r = subprocess.run([str(kamado), "chat", str(tmp_path)], capture_output=True, text=True, timeout=120,
                       input="hi\n")
    assert r.returncode == 2 and "not a Hugging Face model folder" in " ".join(r.stderr.split())
