"""OpenAI-compatible HTTP server for a trained model (standard library ``ThreadingHTTPServer``).

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (the tokenizer's chat template, or a simple
built-in one), ``POST /v1/completions``, ``GET /health``. Parameters: ``temperature``, ``top_p``,
``max_tokens``, ``stop``, ``seed``, ``stream`` (the whole completion sent as server-sent events). Errors are
OpenAI-style JSON ``{"error": {"message", "type", "param", "code"}}`` with 400/404/405/413/500 statuses.
Requests are served from threads; generation itself runs one at a time (one model on the CPU).
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 8 << 20
FALLBACK_STOP = ["\n### 指示:"]


class RequestError(Exception):
    """A client error answered as OpenAI-style JSON."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_


def fallback_chat_prompt(messages: list[dict], bos: str = "", eos: str = "") -> str:
    """The built-in template for tokenizers without one: kamado's tune layout (``kamado.tune.templates``)."""
    parts = [bos]
    for m in messages:
        if m["role"] == "system":
            parts.append(f"{m['content']}\n\n")
        elif m["role"] == "user":
            parts.append(f"### 指示:\n{m['content']}\n\n")
        else:
            parts.append(f"### 応答:\n{m['content']}{eos}\n\n")
    parts.append("### 応答:\n")
    return "".join(parts)


def _content(c: Any) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type", "text") == "text")
    if c is None:
        return ""
    raise RequestError(400, "message content must be a string or a list of text parts", "messages")


class ModelServer:
    """A loaded model and tokenizer behind the OpenAI protocol."""

    def __init__(self, model_dir: Path, name: str | None = None, *, dtype: str = "float32",
                 default_max_tokens: int = 256) -> None:
        from kamado.eval.harness import load_model

        self.model_dir = Path(model_dir)
        self.model, self.tok = load_model(self.model_dir, dtype=dtype)
        self.name = name or (self.model_dir.parent.name if self.model_dir.name == "hf" else self.model_dir.name)
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    # --- parameters -------------------------------------------------------------------------------

    def _params(self, body: dict) -> dict[str, Any]:
        def num(key: str, default: float, lo: float, hi: float) -> float:
            v = body.get(key)
            if v is None:
                return default
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                raise RequestError(400, f"{key} must be a number in [{lo}, {hi}]", key)
            return float(v)

        model = body.get("model")
        if model is not None and model not in (self.name, str(self.model_dir)):
            raise RequestError(404, f"The model '{model}' does not exist; this server has '{self.name}'", "model",
                               "model_not_found")
        mt = body.get("max_tokens", body.get("max_completion_tokens"))
        if mt is None:
            mt = self.default_max_tokens
        if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
            raise RequestError(400, "max_tokens must be a positive integer", "max_tokens")
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
            raise RequestError(400, "stop must be a string or a list of up to 4 strings", "stop")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise RequestError(400, "seed must be an integer", "seed")
        n = body.get("n", 1)
        if n != 1:
            raise RequestError(400, "only n=1 is supported", "n")
        return {"temperature": num("temperature", 1.0, 0.0, 2.0), "top_p": num("top_p", 1.0, 0.0, 1.0) or 1.0,
                "max_tokens": mt, "stop": stop, "seed": seed, "stream": bool(body.get("stream", False))}

    def _generate(self, ids: list[int], p: dict[str, Any], extra_stop: list[str]) -> Any:
        from kamado.eval.generate import generate

        if len(ids) >= self.max_len:
            raise RequestError(400, f"This model's maximum context length is {self.max_len} tokens; the prompt "
                               f"has {len(ids)}", "messages", "context_length_exceeded")
        max_new = min(p["max_tokens"], self.max_len - len(ids))
        return generate(self.model, self.tok, [ids], max_new_tokens=max_new, temperature=p["temperature"],
                        top_p=p["top_p"], stop=[*p["stop"], *extra_stop], seed=p["seed"])[0]

    # --- endpoints ---------------------------------------------------------------------------------

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": self.created,
                                            "owned_by": "kamado", "root": self.name}]}  # no local paths

    def chat(self, body: dict) -> tuple[dict, dict]:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise RequestError(400, "messages must be a non-empty list", "messages")
        clean = []
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
                raise RequestError(400, "each message needs a role (system, user, assistant) and content", "messages")
            role = "system" if m["role"] == "developer" else m["role"]
            clean.append({"role": role, "content": _content(m.get("content"))})
        p = self._params(body)
        extra: list[str] = []
        if getattr(self.tok, "chat_template", None):
            try:
                prompt = self.tok.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
            except Exception as e:  # a template that rejects the conversation (e.g. role order)
                raise RequestError(400, f"chat template error: {e}", "messages") from None
        else:
            prompt = fallback_chat_prompt(clean, self.tok.bos_token or "", self.tok.eos_token or "")
            extra = FALLBACK_STOP
        ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        bos = self.tok.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        g = self._generate(ids, p, extra)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                             "finish_reason": g.finish_reason, "logprobs": None}],
                "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                          "total_tokens": g.prompt_tokens + g.completion_tokens}}, p

    def completion(self, body: dict) -> tuple[dict, dict]:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise RequestError(400, "prompt must be a string (one prompt per request)", "prompt")
        p = self._params(body)
        ids = self.tok(prompt, add_special_tokens=True)["input_ids"]
        g = self._generate(ids, p, [])
        text = (prompt + g.text) if body.get("echo") else g.text
        return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "text": text, "finish_reason": g.finish_reason, "logprobs": None}],
                "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                          "total_tokens": g.prompt_tokens + g.completion_tokens}}, p


def _handler(ms: ModelServer, log: bool, api_key: str | None = None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kamado-serve"

        def log_message(self, fmt: str, *args: Any) -> None:
            if log:
                super().log_message(fmt, *args)

        def _send(self, status: int, obj: dict) -> None:
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, e: RequestError) -> None:
            self._send(e.status, {"error": {"message": e.message, "type": e.type, "param": e.param,
                                            "code": e.code}})

        def _authorized(self) -> bool:
            """With an API key, every endpoint but /health needs ``Authorization: Bearer <key>`` (401 otherwise)."""
            if not api_key or self._route() == "/health":
                return True
            given = self.headers.get("Authorization") or ""
            scheme, _, token = given.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode()):
                return True
            self.close_connection = True  # the request body (if any) is not read
            data = json.dumps({"error": {"message": "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                         "type": "invalid_request_error", "param": None,
                                         "code": "invalid_api_key"}}).encode()
            self.send_response(401)
            self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            return False

        def _route(self) -> str:
            path = self.path.split("?", 1)[0].rstrip("/")
            return path[3:] if path.startswith("/v1") else path

        def do_GET(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            route = self._route()
            if route == "/models":
                self._send(200, ms.models())
            elif route == "/health" or route == "":
                self._send(200, {"status": "ok"} if api_key else {"status": "ok", "model": ms.name})
            elif route in ("/chat/completions", "/completions"):
                self._error(RequestError(405, f"{self.path}: use POST", code="method_not_allowed"))
            else:
                self._error(RequestError(404, f"{self.path}: no such endpoint", code="not_found"))

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            route = self._route()
            try:
                if route not in ("/chat/completions", "/completions"):
                    code = 405 if route in ("/models", "/health") else 404
                    raise RequestError(code, f"{self.path}: " + ("use GET" if code == 405 else "no such endpoint"))
                n = int(self.headers.get("Content-Length") or 0)
                if n > MAX_BODY:
                    self.close_connection = True
                    raise RequestError(413, f"request body over {MAX_BODY} bytes")
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw.decode("utf-8") or "null")
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise RequestError(400, f"request body is not valid JSON: {e}") from None
                if not isinstance(body, dict):
                    raise RequestError(400, "request body must be a JSON object")
                resp, p = ms.chat(body) if route == "/chat/completions" else ms.completion(body)
            except RequestError as e:
                self._error(e)
                return
            except Exception as e:  # noqa: BLE001 - a server bug: report it as JSON, keep serving
                self._error(RequestError(500, f"internal error: {type(e).__name__}: {e}", type_="server_error"))
                return
            if p["stream"]:
                self._stream(resp, chat=route == "/chat/completions")
            else:
                self._send(200, resp)

        def _stream(self, resp: dict, chat: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            c = resp["choices"][0]
            base = {k: resp[k] for k in ("id", "created", "model")}
            if chat:
                base["object"] = "chat.completion.chunk"
                chunks = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None},
                          {"index": 0, "delta": {"content": c["message"]["content"]}, "finish_reason": None},
                          {"index": 0, "delta": {}, "finish_reason": c["finish_reason"]}]
            else:
                base["object"] = "text_completion"
                chunks = [{"index": 0, "text": c["text"], "finish_reason": None},
                          {"index": 0, "text": "", "finish_reason": c["finish_reason"]}]
            for ch in chunks:
                self.wfile.write(f"data: {json.dumps({**base, 'choices': [ch]}, ensure_ascii=False)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def make_server(ms: ModelServer, host: str = "127.0.0.1", port: int = 8000, *, log: bool = False,
                api_key: str | None = None) -> ThreadingHTTPServer:
    """An HTTP server for ``ms`` bound to host:port (port 0 picks a free one: see ``server_address``); with
    ``api_key``, requests need ``Authorization: Bearer <api_key>``."""
    srv = ThreadingHTTPServer((host, port), _handler(ms, log, api_key))
    srv.daemon_threads = True
    return srv
