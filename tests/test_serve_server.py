"""`kamado serve`: a real OpenAI-compatible server on 127.0.0.1 over a tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from _toy import build_toy_model

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"


@pytest.fixture(scope="module")
def toy(data_root: Path) -> Path:
    return build_toy_model(CACHE / "toy-eval-v1", data_root)


def post(url: str, body: dict | bytes, timeout: float = 60) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def start_cli_server(model_dir: Path, name: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``kamado serve MODEL --port 0`` in a subprocess; returns it and its base URL (waits until up)."""
    env = {**os.environ, "KAMADO_QUIET": "1", "OMP_NUM_THREADS": "1"}
    f = open(log, "w")  # noqa: SIM115 - kept open for the process lifetime
    proc = subprocess.Popen([sys.executable, "-m", "kamado.cli", "serve", str(model_dir), "--port", "0",
                             "--name", name, "--threads", "1"], stdout=f, stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT)
    deadline = time.time() + 180
    while time.time() < deadline:
        text = log.read_text()
        if "http://" in text:
            return proc, text.split("at ", 1)[1].split()[0]
        if proc.poll() is not None:
            raise RuntimeError(f"kamado serve exited: {text}")
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("kamado serve did not start")


@pytest.fixture(scope="module")
def cli_server(toy: Path, tmp_path_factory):
    proc, url = start_cli_server(toy, "toy", tmp_path_factory.mktemp("serve") / "serve.log")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_models_chat_and_completions(cli_server):
    url = cli_server
    code, models = get(f"{url}/models")
    assert code == 200 and models["object"] == "list" and models["data"][0]["id"] == "toy"
    code, r = post(f"{url}/chat/completions", {"model": "toy", "max_tokens": 8, "temperature": 0,
                                               "messages": [{"role": "system", "content": "簡潔に"},
                                                            {"role": "user", "content": "日本の首都は？"}]})
    assert code == 200, r
    assert r["object"] == "chat.completion" and r["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(r["choices"][0]["message"]["content"], str)
    assert r["choices"][0]["finish_reason"] in ("stop", "length")
    u = r["usage"]
    assert 1 <= u["completion_tokens"] <= 8 and u["prompt_tokens"] > 5
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    # greedy is deterministic; sampling is deterministic under a seed
    body = {"prompt": "吾輩は猫である。", "max_tokens": 12}
    a = post(f"{url}/completions", {**body, "temperature": 0})[1]["choices"][0]["text"]
    b = post(f"{url}/completions", {**body, "temperature": 0})[1]["choices"][0]["text"]
    assert a == b
    s1 = post(f"{url}/completions", {**body, "temperature": 1.0, "top_p": 0.9, "seed": 7})[1]["choices"][0]["text"]
    s2 = post(f"{url}/completions", {**body, "temperature": 1.0, "top_p": 0.9, "seed": 7})[1]["choices"][0]["text"]
    assert s1 == s2
    # a stop string cuts the completion before it
    long = post(f"{url}/completions", {**body, "max_tokens": 30, "temperature": 0})[1]["choices"][0]["text"]
    stop = long[len(long) // 2]
    r = post(f"{url}/completions", {**body, "max_tokens": 30, "temperature": 0, "stop": [stop]})[1]
    assert r["choices"][0]["text"] == long[: long.index(stop)]
    assert r["choices"][0]["finish_reason"] == "stop"


def test_errors_are_openai_json_with_status_codes(cli_server):
    url = cli_server
    cases = [
        (f"{url}/chat/completions", b"{not json", 400, None),
        (f"{url}/chat/completions", {"messages": []}, 400, "messages"),
        (f"{url}/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
        (f"{url}/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        (f"{url}/completions", {"prompt": "x", "temperature": 5}, 400, "temperature"),
        (f"{url}/completions", {"prompt": "x", "stop": 3}, 400, "stop"),
        (f"{url}/completions", {"prompt": "x", "model": "gpt-4"}, 404, "model"),
        (f"{url}/completions", {"prompt": "x", "n": 3}, 400, "n"),
        (f"{url}/embeddings", {"input": "x"}, 404, None),
    ]
    for u, body, status, param in cases:
        code, r = post(u, body)
        assert code == status, (body, r)
        assert isinstance(r["error"]["message"], str) and r["error"]["message"]
        assert r["error"]["param"] == param
    code, r = get(f"{url}/chat/completions")
    assert code == 405 and "error" in r
    code, r = post(f"{url}/completions", {"prompt": "猫" * 5000, "max_tokens": 4})
    assert code == 400 and r["error"]["code"] == "context_length_exceeded"


def test_stream_sends_server_sent_events(cli_server):
    req = urllib.request.Request(f"{cli_server}/chat/completions", method="POST",
                                 data=json.dumps({"messages": [{"role": "user", "content": "こんにちは"}],
                                                  "max_tokens": 5, "stream": True}).encode())
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [line[6:] for line in r.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_fallback_template_without_chat_template(toy, tmp_path):
    """A tokenizer without a chat template gets the built-in one (in-process server, same handler)."""
    from kamado.serve.server import ModelServer, fallback_chat_prompt, make_server

    plain = tmp_path / "plain"
    shutil.copytree(toy, plain)
    cfg = json.loads((plain / "tokenizer_config.json").read_text())
    cfg.pop("chat_template")
    (plain / "tokenizer_config.json").write_text(json.dumps(cfg))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    ms = ModelServer(plain, "plain")
    assert not ms.tok.chat_template
    srv = make_server(ms, "127.0.0.1", 0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        msgs = [{"role": "user", "content": "こんにちは"}, {"role": "assistant", "content": "はい"},
                {"role": "user", "content": [{"type": "text", "text": "元気？"}]}]
        code, r = post(f"{url}/chat/completions", {"messages": msgs, "max_tokens": 4, "temperature": 0})
        assert code == 200, r
        prompt = fallback_chat_prompt([{**m, "content": m["content"] if isinstance(m["content"], str) else "元気？"}
                                       for m in msgs], ms.tok.bos_token, ms.tok.eos_token)
        assert "### 応答:\nはい</s>\n\n" in prompt
        assert prompt.endswith("### 指示:\n元気？\n\n### 応答:\n")
        assert r["usage"]["prompt_tokens"] == len(ms.tok(prompt, add_special_tokens=False)["input_ids"])
    finally:
        srv.shutdown()
        srv.server_close()
        torch.set_num_threads(n)


def test_api_key_is_required_when_set(toy, tmp_path):
    """A real `kamado serve` with KAMADO_API_KEY: 401 without or with a wrong key, 200 with it; no local paths."""
    os.environ["KAMADO_API_KEY"] = "s3cret"
    try:
        proc, url = start_cli_server(toy, "toy", tmp_path / "serve.log")
    finally:
        del os.environ["KAMADO_API_KEY"]
    try:
        assert "(API key required)" in (tmp_path / "serve.log").read_text()

        def call(path: str, key: str | None, body: dict | None = None) -> tuple[int, dict]:
            req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json",
                                                  **({"Authorization": f"Bearer {key}"} if key else {})})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        assert call("/models", None)[0] == 401
        code, body = call("/models", "wrong")
        assert code == 401 and body["error"]["code"] == "invalid_api_key"
        code, body = call("/models", "s3cret")
        assert code == 200 and str(toy) not in json.dumps(body) and body["data"][0]["root"] == "toy"
        chat = {"messages": [{"role": "user", "content": "こんにちは"}], "max_tokens": 2}
        assert call("/chat/completions", None, chat)[0] == 401
        assert call("/chat/completions", "s3cret", chat)[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
