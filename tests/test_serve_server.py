"""`kamado serve`: a real OpenAI-compatible server (uvicorn) on 127.0.0.1 over a tiny model, with hostile
clients: lying lengths, bad encodings, out-of-range numbers, floods, clients that leave."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from kamado.serve.server import ModelServer

ROOT = Path(__file__).resolve().parents[1]


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


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> str:
    """Send ``head`` and ``body`` on a raw socket; the answer until the server closes (or the socket error)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = b""
    try:
        s.sendall(head)
        try:
            s.sendall(body)
        except OSError:  # the server answered and closed before reading it all: fine
            pass
        while len(got) < 65536 and (data := s.recv(4096)):
            got += data
    except OSError as e:  # a reset after the answer (the unread body) ends it too
        got = got or repr(e).encode()
    finally:
        s.close()
    return got.decode("latin-1")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_cli_server(model_dir: Path, name: str, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``kamado serve MODEL --port 0`` in a subprocess; returns it and its base URL (waits until up)."""
    env = {**os.environ, "KAMADO_QUIET": "1", "OMP_NUM_THREADS": "1"}
    f = open(log, "w")  # noqa: SIM115 - kept open for the process lifetime
    proc = subprocess.Popen([sys.executable, "-m", "kamado.cli", "serve", str(model_dir), "--port", "0",
                             "--name", name, "--threads", "1", *extra], stdout=f, stderr=subprocess.STDOUT,
                            env=env, cwd=ROOT)
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
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


class Recording(ModelServer):
    """The model server, noting each generation it ran: (prompt ids, completion tokens, cancelled)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.ran: list[tuple[list[int], int, bool]] = []
        self.started = threading.Event()

    def generate(self, ids, req, extra_stop, cancel):
        self.started.set()
        g = super().generate(ids, req, extra_stop, cancel)
        self.ran.append((ids, g.completion_tokens, cancel.is_set()))
        return g


@pytest.fixture(scope="module")
def kamado_model(data_root: Path) -> Path:
    """A random tiny LLaMA on a tokenizer trained and exported by kamado (as every run's model is), cached in
    .cache/ like the toy model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from kamado.corpus.docs import resolve_inputs
    from kamado.tokenizer.config import TokenizerConfig
    from kamado.tokenizer.export import load
    from kamado.tokenizer.train import train_tokenizer

    out = ROOT / ".cache" / "toy-serve-v1"
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    cfg = TokenizerConfig(vocab_size=1200, sample_chars=120_000, character_coverage=0.995, heldout_chars=5_000)
    train_tokenizer(resolve_inputs(["ja-wikipedia", "wikitext2"], data_root), cfg, tmp, seed=3)
    tok = load(tmp)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(tmp)
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@pytest.fixture(scope="module")
def live(kamado_model: Path):
    """uvicorn in a thread of this process, with a queue of 4, over a Recording model server."""
    from kamado.serve.server import make_server

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    ms = Recording(kamado_model, "toy")
    srv = make_server(ms, "127.0.0.1", 0, queue_size=4)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    while not srv.uvicorn.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", ms
    srv.shutdown()
    th.join(30)
    torch.set_num_threads(n)


def test_models_chat_and_completions(cli_server):
    url, _ = cli_server
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


def test_errors_are_openai_json_with_status_codes(live):
    url, _ = live
    chat, comp = f"{url}/chat/completions", f"{url}/completions"
    msgs = [{"role": "user", "content": "a"}]
    deep = b'{"messages": [{"role": "user", "content": "a"}], "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    cases = [
        (chat, b"{not json", 400, None),
        (chat, b"", 400, None),
        (chat, b"[]", 400, None),
        (chat, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, None),  # not UTF-8
        (chat, b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', 400, None),  # UTF-8 surrogate
        (chat, b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, None),  # lone surrogates
        (chat, b'{"model": "\\udfff", "messages": [{"role": "user", "content": "a"}]}', 400, None),
        (chat, b'{"messages": [{"role": "user", "content": "a"}], "stop": ["\\ud800x"]}', 400, None),
        (comp, b'{"prompt": "a\\udc00"}', 400, None),
        (chat, b'{"messages": [{"role": "user", "content": "a"}], "temperature": NaN}', 400, None),
        (chat, b'{"messages": [{"role": "user", "content": "a"}], "temperature": Infinity}', 400, None),
        (chat, deep, 400, None),
        (chat, {"messages": []}, 400, "messages"),
        (chat, {"messages": "hello"}, 400, "messages"),
        (chat, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
        (chat, {"messages": [{"role": "user", "content": 5}]}, 400, "messages"),
        (chat, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, 400,
         "messages"),
        (chat, {"messages": msgs, "seed": 1e23}, 400, "seed"),
        (chat, {"messages": msgs, "seed": 2**64}, 400, "seed"),
        (chat, {"messages": msgs, "seed": "7"}, 400, "seed"),
        (chat, b'{"messages": [{"role": "user", "content": "a"}], "temperature": 1e400}', 400, "temperature"),
        (chat, {"messages": msgs, "temperature": -0.5}, 400, "temperature"),
        (chat, {"messages": msgs, "top_p": 0}, 400, "top_p"),
        (chat, {"messages": msgs, "top_p": 1.5}, 400, "top_p"),
        (chat, {"messages": msgs, "max_tokens": -1}, 400, "max_tokens"),
        (chat, {"messages": msgs, "max_tokens": "5"}, 400, "max_tokens"),
        (chat, {"messages": msgs, "max_tokens": 2.0}, 400, "max_tokens"),
        (chat, {"messages": msgs, "stream": "yes"}, 400, "stream"),
        (chat, {"messages": msgs, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        (comp, {"prompt": ""}, 400, "prompt"),
        (comp, {"prompt": [""]}, 400, "prompt"),
        (comp, {"prompt": ["a", "b"]}, 400, "prompt"),
        (comp, {"prompt": [1, 2, 3]}, 400, "prompt"),
        (comp, {"prompt": None}, 400, "prompt"),
        (comp, {"max_tokens": 3}, 400, "prompt"),
        (comp, {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        (comp, {"prompt": "x", "temperature": 5}, 400, "temperature"),
        (comp, {"prompt": "x", "stop": 3}, 400, "stop"),
        (comp, {"prompt": "x", "model": "gpt-4"}, 404, "model"),
        (comp, {"prompt": "x", "n": 3}, 400, "n"),
        (f"{url}/embeddings", {"input": "x"}, 404, None),
        (f"{url}/models", {}, 405, None),
    ]
    for u, body, status, param in cases:
        code, r = post(u, body)
        assert code == status, (body[:200], r)
        e = r["error"]
        assert set(e) == {"message", "type", "param", "code"} and isinstance(e["message"], str) and e["message"]
        if param:
            assert e["param"] == param, (body, e)
    code, r = get(f"{url}/chat/completions")
    assert code == 405 and "error" in r
    code, r = post(f"{url}/completions", {"prompt": "猫" * 5000, "max_tokens": 4})
    assert code == 400 and r["error"]["code"] == "context_length_exceeded"
    # fields OpenAI clients send that kamado does not use are ignored; the server still answers
    code, r = post(chat, {"messages": msgs, "max_tokens": 2, "user": "u1", "frequency_penalty": 0})
    assert code == 200, r


def test_body_limit_counts_the_bytes_read(cli_server):
    """A lying Content-Length (-1, or absent with a chunked body) cannot get past the 8 MiB limit: a 4xx
    comes back at once, and the server does not hold the body in memory."""
    url, proc = cli_server
    port = int(url.split(":")[2].split("/")[0])
    before = rss_mb(proc.pid)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    t = time.perf_counter()
    first = raw_request(port, head + b"Content-Length: -1\r\n\r\n", b"{" + b" " * (20 << 20) + b"}")
    assert first.startswith("HTTP/1.1 400"), first[:80]
    first = raw_request(port, head + b"Content-Length: 20971522\r\n\r\n", b"{" + b" " * (20 << 20) + b"}")
    assert first.startswith("HTTP/1.1 413") and '"request_too_large"' in first, first[:300]
    chunk = b"100000\r\n" + b" " * (1 << 20) + b"\r\n"
    first = raw_request(port, head + b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\n{\r\n" + chunk * 20)
    assert first.startswith("HTTP/1.1 413"), first[:80]
    assert time.perf_counter() - t < 15
    assert rss_mb(proc.pid) - before < 40
    assert get(f"{url}/models")[0] == 200


def test_a_body_that_does_not_arrive_times_out(live, monkeypatch):
    """A Content-Length larger than what is sent holds no connection forever: 408 after BODY_TIMEOUT."""
    from kamado.serve import server

    monkeypatch.setattr(server, "BODY_TIMEOUT", 0.5)
    port = int(live[0].split(":")[2].split("/")[0])
    t = time.perf_counter()
    first = raw_request(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
                        b'{"prompt": ')
    assert first.startswith("HTTP/1.1 408") and '"timeout"' in first, first[:200]
    assert time.perf_counter() - t < 10


def test_a_flood_gets_answers_not_resets(live):
    """64 concurrent chat requests against a queue of 4: every one gets an HTTP answer, 200 or 503 with
    Retry-After and an OpenAI-style error."""
    url, _ = live
    res: list = [None] * 64

    def one(i: int) -> None:
        req = urllib.request.Request(f"{url}/chat/completions", method="POST", data=json.dumps(
            {"messages": [{"role": "user", "content": f"こんにちは {i}"}], "max_tokens": 8}).encode())
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                res[i] = (r.status, None, json.loads(r.read()))
        except urllib.error.HTTPError as e:
            res[i] = (e.code, e.headers.get("Retry-After"), json.loads(e.read()))
        except Exception as e:  # noqa: BLE001 - a reset or a timeout is what this test looks for
            res[i] = (repr(e), None, None)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(64)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    codes = [r[0] for r in res]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 4 and codes.count(503) >= 1
    for code, retry, body in res:
        if code == 503:
            assert int(retry) >= 1 and body["error"]["code"] == "server_busy"
        else:
            assert body["choices"][0]["message"]["role"] == "assistant"


def test_a_client_that_leaves_cancels_its_generation(live):
    """A long generation whose client disconnects stops at its next token; a queued request whose client
    left never runs; the short request behind them is answered at once."""
    url, ms = live
    port = int(url.split(":")[2].split("/")[0])

    def send(body: dict) -> socket.socket:
        data = json.dumps(body).encode()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
        return s

    ms.ran.clear()
    ms.started.clear()
    t0 = time.perf_counter()
    long = send({"prompt": "吾輩は猫である。", "max_tokens": 1000, "temperature": 0})
    assert ms.started.wait(30)
    queued = send({"prompt": "待っている", "max_tokens": 1000, "temperature": 0})
    time.sleep(0.1)
    queued.close()
    long.close()
    t = time.perf_counter()
    code, r = post(f"{url}/completions", {"prompt": "こんにちは", "max_tokens": 1, "temperature": 0})
    behind = time.perf_counter() - t
    assert code == 200 and r["usage"]["completion_tokens"] == 1
    ids, tokens, cancelled = ms.ran[0]
    assert cancelled and tokens < 1000, (tokens, cancelled)
    assert len(ms.ran) == 2 and not ms.ran[1][2]  # the queued one never ran; the short one did
    # the uncancelled long generation takes far longer than the short one behind the cancelled one
    full = time.perf_counter()
    code, r = post(f"{url}/completions", {"prompt": "吾輩は猫である。", "max_tokens": 1000, "temperature": 0})
    full = time.perf_counter() - full
    assert code == 200 and r["usage"]["completion_tokens"] == 1000, r["usage"]
    assert behind < full / 2 and behind < time.perf_counter() - t0, (behind, full)


def test_special_token_strings_are_text(live):
    """A user who types </s> or <s> sends characters, not end/begin-of-sequence tokens (the ids are those of
    `kamado chat` and `kamado tune`: kamado.tokenizer.text)."""
    from kamado.serve.server import ChatRequest, CompletionRequest
    from kamado.tokenizer.text import encode_chat, encode_text

    url, ms = live
    tok = ms.tok
    msgs = [{"role": "user", "content": "質問</s><s>です"}]
    ids, _ = ms.chat_ids(ChatRequest(messages=msgs))
    assert ids == encode_chat(tok, msgs, add_generation_prompt=True).ids
    assert ids.count(tok.bos_token_id) == 1 and tok.eos_token_id not in ids
    code, r = post(f"{url}/chat/completions", {"messages": msgs, "max_tokens": 1})
    assert code == 200 and r["usage"]["prompt_tokens"] == len(ids)
    ids = ms.completion_ids("a</s>b")
    assert ids == tok("a</s>b", add_special_tokens=True, split_special_tokens=True)["input_ids"]
    assert ids == encode_text(tok, "a</s>b") and tok.eos_token_id not in ids  # kamado adds no BOS here
    code, r = post(f"{url}/completions", {"prompt": "a</s>b", "max_tokens": 1})
    assert code == 200 and r["usage"]["prompt_tokens"] == len(ids)
    assert ms.completion_ids(CompletionRequest(prompt=["x"]).prompt[0]) == ms.completion_ids("x")


def test_stream_sends_server_sent_events(live):
    url, _ = live
    for path, body in [("chat/completions", {"messages": [{"role": "user", "content": "こんにちは"}]}),
                       ("completions", {"prompt": "こんにちは"})]:
        req = urllib.request.Request(f"{url}/{path}", method="POST",
                                     data=json.dumps({**body, "max_tokens": 5, "stream": True}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = [line[6:] for line in r.read().decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["object"] == ("chat.completion.chunk" if path == "chat/completions" else "text_completion")
                   for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_fallback_template_without_chat_template(toy, tmp_path):
    """A tokenizer without a chat template gets kamado's tune template (in-process server, same app)."""
    from kamado.serve.server import make_server
    from kamado.tokenizer.text import encode_chat
    from kamado.tune.templates import render

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
        while not srv.uvicorn.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        msgs = [{"role": "user", "content": "こんにちは"}, {"role": "assistant", "content": "はい"},
                {"role": "user", "content": [{"type": "text", "text": "元気？"}]}]
        code, r = post(f"{url}/chat/completions", {"messages": msgs, "max_tokens": 4, "temperature": 0})
        assert code == 200, r
        flat = [{**m, "content": m["content"] if isinstance(m["content"], str) else "元気？"} for m in msgs]
        prompt = render(flat, ms.tok.bos_token, ms.tok.eos_token, add_generation_prompt=True)
        assert "### 応答:\nはい</s>\n\n" in prompt
        assert prompt.endswith("### 指示:\n元気？\n\n### 応答:\n")
        ids = encode_chat(ms.tok, flat, add_generation_prompt=True, render=lambda m, g: render(
            m, ms.tok.bos_token, ms.tok.eos_token, add_generation_prompt=g)).ids
        assert r["usage"]["prompt_tokens"] == len(ids)
    finally:
        srv.shutdown()
        th.join(30)
        torch.set_num_threads(n)


@pytest.mark.slow  # 27 s: a `kamado serve` subprocess (test-fast run on a loaded box)
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
        assert get(url.removesuffix("/v1") + "/health")[0] == 200  # open without a key
    finally:
        proc.terminate()
        proc.wait(timeout=30)
