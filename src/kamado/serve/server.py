"""OpenAI-compatible HTTP server for a trained model, on uvicorn (h11) and Starlette.

Endpoints (with or without the ``/v1`` prefix): ``GET /v1/models``, ``POST /v1/chat/completions`` (the
tokenizer's chat template, or kamado's tune template when it has none), ``POST /v1/completions``,
``GET /health``. Parameters: ``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed``, ``stream`` (the
whole completion sent as server-sent events). Every error is OpenAI-style JSON
``{"error": {"message", "type", "param", "code"}}`` (only a request that is not valid HTTP at all gets
uvicorn's plain-text 400).

Hostile clients:
- request bodies are limited to :data:`MAX_BODY` bytes as they are read (a ``Content-Length`` over it is
  refused before reading; a missing or lying one cannot bypass the count) and must arrive within
  :data:`BODY_TIMEOUT` seconds;
- requests are validated with pydantic (strict types, finite and in-range numbers, non-empty prompts and
  message lists); JSON is parsed by pydantic-core (no NaN/Infinity, no lone surrogates, nesting ≤ 200);
- the model runs one request at a time in a worker thread behind a bounded queue; when the queue is full
  the answer is 503 with ``Retry-After``; the listen backlog is :data:`BACKLOG`;
- a client that goes away cancels its generation (checked after every token), or drops it from the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kamado.tune import templates

MAX_BODY = 8 << 20  # bytes of one request body
BODY_TIMEOUT = 30.0  # seconds to receive a whole request body
BACKLOG = 2048  # pending connections the kernel holds before accept
MAX_CONNECTIONS = 256  # open connections; more get uvicorn's 503 (bounds buffered bodies to 2 GiB)
QUEUE_SIZE = 32  # generation requests running or waiting; more get 503 + Retry-After
# a reply ends before the next turn header of kamado's template (used when a tokenizer has no template)
FALLBACK_STOP = ["\n" + templates.USER_HEADER.rstrip("\n")]


class RequestError(Exception):
    """A client error answered as OpenAI-style JSON."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_
        self.headers = headers or {}


def chat_render(tok: Any) -> Callable[[list[dict[str, str]], bool], str] | None:
    """How a chat is rendered for ``tok``: None (its own chat template) or, for a tokenizer without one,
    kamado's tune template (:func:`kamado.tune.templates.render`). ``kamado chat`` uses the same."""
    if getattr(tok, "chat_template", None):
        return None
    bos, eos = tok.bos_token or "", tok.eos_token or ""
    return lambda msgs, gen: templates.render(msgs, bos, eos, add_generation_prompt=gen)


# --- requests -------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    # strict types (no "1" for 1, no 1.0 for an int, no true for a number); fields OpenAI clients send
    # that kamado does not use (user, frequency_penalty, ...) are allowed and ignored
    model_config = ConfigDict(strict=True, extra="allow")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class _Sampling(_Strict):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=2**31 - 1)
    max_completion_tokens: int | None = Field(None, ge=1, le=2**31 - 1)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # torch.manual_seed's range
    n: int | None = Field(None, ge=1, le=1)  # one completion per request
    stream: bool | None = None


NonEmpty = Annotated[str, Field(min_length=1)]


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(_Sampling):
    prompt: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=1)]  # one prompt per request
    echo: bool | None = None


def parse_request(raw: bytes, kind: type[_Sampling]) -> Any:
    """A validated request from a body, or a 400 naming the first bad field."""
    from pydantic_core import from_json

    try:
        body = from_json(raw, allow_inf_nan=False)  # strict UTF-8, no lone surrogates, nesting limited
    except ValueError as e:
        raise RequestError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object", code="invalid_json")
    try:
        return kind.model_validate(body)
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        loc = [str(x) for x in err["loc"]]  # a union's errors name the member tried: stop.str
        raise RequestError(400, f"{'.'.join(loc) or 'body'}: {err['msg']}", loc[0] if loc else None,
                           "invalid_value") from None


# --- the model -------------------------------------------------------------------------------------------


class ModelServer:
    """A loaded model and tokenizer behind the OpenAI protocol (its methods run in the worker thread)."""

    def __init__(self, model_dir: Path, name: str | None = None, *, dtype: str = "float32",
                 default_max_tokens: int = 256) -> None:
        from kamado.eval.harness import load_model

        self.model_dir = Path(model_dir)
        self.model, self.tok = load_model(self.model_dir, dtype=dtype)
        self.name = name or (self.model_dir.parent.name if self.model_dir.name == "hf" else self.model_dir.name)
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    def check_model(self, req: _Sampling) -> None:
        if req.model is not None and req.model not in (self.name, str(self.model_dir)):
            raise RequestError(404, f"The model '{req.model}' does not exist; this server has '{self.name}'",
                               "model", "model_not_found")

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": self.created,
                                            "owned_by": "kamado", "root": self.name}]}  # no local paths

    def _with_bos(self, ids: list[int]) -> list[int]:
        bos = self.tok.bos_token_id
        return [bos, *ids] if bos is not None and (not ids or ids[0] != bos) else ids

    def chat_ids(self, req: ChatRequest) -> tuple[list[int], list[str]]:
        """The prompt's ids (the same encoding as ``kamado chat`` and ``kamado tune``) and extra stop strings."""
        from jinja2 import TemplateError

        from kamado.tokenizer.text import encode_chat

        msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        render = chat_render(self.tok)
        try:
            ids = encode_chat(self.tok, msgs, add_generation_prompt=True, render=render).ids
        except (TemplateError, ValueError) as e:  # a template that rejects the conversation (e.g. role order)
            raise RequestError(400, f"chat template error: {e}", "messages") from None
        # kamado's template (the tokenizer's own, or the fallback): a reply ends before the next user turn
        kamado = render is not None or FALLBACK_STOP[0].strip("\n") in self.tok.chat_template
        return self._with_bos(ids), (FALLBACK_STOP if kamado else [])

    def completion_ids(self, prompt: str) -> list[int]:
        """The prompt as text (special-token strings are characters), after a BOS where the tokenizer adds
        one itself (``add_bos_token``; kamado's tokenizers do not: pretraining documents start without it),
        as evaluation's generation does."""
        from kamado.tokenizer.text import encode_text

        ids = encode_text(self.tok, prompt)
        return self._with_bos(ids) if getattr(self.tok, "add_bos_token", False) else ids

    def generate(self, ids: list[int], req: _Sampling, extra_stop: list[str], cancel: threading.Event) -> Any:
        from kamado.eval.generate import generate

        if len(ids) >= self.max_len:
            raise RequestError(400, f"This model's maximum context length is {self.max_len} tokens; the prompt "
                               f"has {len(ids)}", "messages" if isinstance(req, ChatRequest) else "prompt",
                               "context_length_exceeded")
        mt = req.max_tokens or req.max_completion_tokens or self.default_max_tokens
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        temperature = 1.0 if req.temperature is None else req.temperature
        return generate(self.model, self.tok, [ids], max_new_tokens=min(mt, self.max_len - len(ids)),
                        temperature=temperature, top_p=req.top_p or 1.0, stop=[*stop, *extra_stop],
                        seed=req.seed, cancelled=cancel.is_set)[0]

    def chat(self, req: ChatRequest, cancel: threading.Event) -> dict:
        ids, extra = self.chat_ids(req)
        g = self.generate(ids, req, extra, cancel)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                             "finish_reason": g.finish_reason, "logprobs": None}],
                "usage": _usage(g)}

    def completion(self, req: CompletionRequest, cancel: threading.Event) -> dict:
        prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
        g = self.generate(self.completion_ids(prompt), req, [], cancel)
        return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "text": (prompt + g.text) if req.echo else g.text,
                             "finish_reason": g.finish_reason, "logprobs": None}],
                "usage": _usage(g)}


def _usage(g: Any) -> dict:
    return {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
            "total_tokens": g.prompt_tokens + g.completion_tokens}


# --- the queue -------------------------------------------------------------------------------------------


class GenerationQueue:
    """One worker thread runs jobs in arrival order; at most ``size`` jobs run or wait. Each job gets a
    cancel event, set when its client goes away: a waiting job is then skipped, a running one stops at its
    next token."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self.size = size
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="kamado-generate")
        self.jobs: set[threading.Event] = set()
        self.seconds = 1.0  # moving average of a job's time, for Retry-After

    def retry_after(self) -> int:
        return max(1, min(60, math.ceil(self.seconds * len(self.jobs))))

    def _timed(self, fn: Callable[[threading.Event], Any], cancel: threading.Event) -> Any:
        if cancel.is_set():
            return None  # its client left while it waited
        t = time.perf_counter()
        try:
            return fn(cancel)
        finally:
            self.seconds = 0.8 * self.seconds + 0.2 * (time.perf_counter() - t)

    async def run(self, fn: Callable[[threading.Event], Any], receive: Any) -> Any:
        """``fn(cancel)``'s result; None when the client went away first. 503 when the queue is full."""
        if len(self.jobs) >= self.size:
            raise RequestError(503, f"the server is busy ({self.size} requests running or waiting); retry later",
                               code="server_busy", type_="server_error",
                               headers={"Retry-After": str(self.retry_after())})
        cancel = threading.Event()
        self.jobs.add(cancel)
        fut = asyncio.get_running_loop().run_in_executor(self.pool, self._timed, fn, cancel)
        fut.add_done_callback(lambda f: (self.jobs.discard(cancel), f.cancelled() or f.exception()))
        gone = asyncio.ensure_future(_client_gone(receive))
        try:
            await asyncio.wait({fut, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # uvicorn's graceful shutdown gave up waiting for this request
            cancel.set()
            raise RequestError(503, "the server is shutting down", code="server_shutting_down",
                               type_="server_error") from None
        finally:
            if not fut.done():  # the client left
                cancel.set()
            gone.cancel()
        return fut.result() if fut.done() else None

    def close(self) -> None:
        for cancel in list(self.jobs):
            cancel.set()
        self.pool.shutdown(wait=False, cancel_futures=True)


async def _client_gone(receive: Any) -> None:
    """Returns when the client disconnects (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


# --- the app ---------------------------------------------------------------------------------------------


def _error(e: RequestError) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}},
                        status_code=e.status, headers=e.headers)


def _route(path: str) -> str:
    """``/v1/x/`` and ``/x`` are one route."""
    path = path.rstrip("/")
    path = path[3:] if path == "/v1" or path.startswith("/v1/") else path
    return path or "/"


class _Front:
    """Pure ASGI middleware: one path per route, and the API key (every route but /health needs it)."""

    def __init__(self, app: Any, api_key: str | None) -> None:
        self.app, self.api_key = app, api_key

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "path": _route(scope["path"])}  # uvicorn's own scope (its access log) keeps the path
            if self.api_key and scope["path"] != "/health":
                from starlette.datastructures import Headers

                scheme, _, token = (Headers(scope=scope).get("authorization") or "").partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                         self.api_key.encode()):
                    e = RequestError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                     code="invalid_api_key", headers={"WWW-Authenticate": "Bearer",
                                                                      "Connection": "close"})
                    await _error(e)(scope, receive, send)  # the body (if any) is not read
                    return
        await self.app(scope, receive, send)


def build_app(ms: ModelServer, *, api_key: str | None = None, queue_size: int = QUEUE_SIZE) -> Any:
    """The Starlette app serving ``ms``."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    queue = GenerationQueue(queue_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        queue.close()

    async def read_body(request: Request) -> bytes:
        """The body, counted as it arrives (h11 has checked that a Content-Length is digits only)."""
        too_large = RequestError(413, f"request body over {MAX_BODY} bytes", code="request_too_large",
                                 headers={"Connection": "close"})  # the rest is not read
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            raise too_large
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise too_large
        except TimeoutError:
            raise RequestError(408, f"the request body did not arrive within {BODY_TIMEOUT:g} s", code="timeout",
                               headers={"Connection": "close"}) from None
        return bytes(body)

    async def complete(request: Request, kind: type[_Sampling],
                       job: Callable[[Any, threading.Event], dict], chat: bool) -> Any:
        req = parse_request(await read_body(request), kind)
        ms.check_model(req)
        resp = await queue.run(lambda cancel: job(req, cancel), request.receive)
        if resp is None:  # the client is gone; nobody reads this
            return JSONResponse({}, status_code=400)
        if not req.stream:
            return JSONResponse(resp)
        return StreamingResponse(_events(resp, chat), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def chat(request: Request) -> Any:
        return await complete(request, ChatRequest, ms.chat, True)

    async def completions(request: Request) -> Any:
        return await complete(request, CompletionRequest, ms.completion, False)

    async def models(request: Request) -> Any:
        return JSONResponse(ms.models())

    async def health(request: Request) -> Any:
        return JSONResponse({"status": "ok"} if api_key else {"status": "ok", "model": ms.name})

    async def on_request_error(request: Request, e: Exception) -> Any:
        assert isinstance(e, RequestError)
        return _error(e)

    async def on_http_error(request: Request, e: Exception) -> Any:
        assert isinstance(e, HTTPException)
        status = e.status_code
        msg = {404: f"{request.url.path}: no such endpoint", 405: f"{request.url.path}: use "
               + ("POST" if request.url.path.endswith("completions") else "GET")}.get(status, str(e.detail))
        code = {404: "not_found", 405: "method_not_allowed"}.get(status)
        return _error(RequestError(status, msg, code=code, headers=e.headers))

    async def on_disconnect(request: Request, e: Exception) -> Any:
        return JSONResponse({}, status_code=400)  # the client left while sending its body; nobody reads this

    async def on_bug(request: Request, e: Exception) -> Any:
        return _error(RequestError(500, f"internal error: {type(e).__name__}: {e}", type_="server_error"))

    routes = [Route("/chat/completions", chat, methods=["POST"]),
              Route("/completions", completions, methods=["POST"]),
              Route("/models", models, methods=["GET"]),
              Route("/health", health, methods=["GET"]), Route("/", health, methods=["GET"])]
    return Starlette(routes=routes, middleware=[Middleware(_Front, api_key=api_key)], lifespan=lifespan,
                     exception_handlers={RequestError: on_request_error, HTTPException: on_http_error,
                                         ClientDisconnect: on_disconnect, Exception: on_bug})


def _events(resp: dict, chat: bool) -> AsyncIterator[str]:
    """The finished completion as server-sent events (role, text, finish reason, ``[DONE]``)."""
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

    async def gen() -> AsyncIterator[str]:
        for ch in chunks:
            yield f"data: {json.dumps({**base, 'choices': [ch]}, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return gen()


class Server:
    """uvicorn serving :func:`build_app` on a socket bound at construction (port 0 picks a free one: see
    ``server_address``). ``serve_forever()`` blocks (Ctrl-C / SIGTERM stop it); ``shutdown()`` stops it from
    another thread."""

    def __init__(self, ms: ModelServer, host: str = "127.0.0.1", port: int = 8000, *, log: bool = False,
                 api_key: str | None = None, queue_size: int = QUEUE_SIZE) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self.server_address = self.sock.getsockname()[:2]
        config = uvicorn.Config(build_app(ms, api_key=api_key, queue_size=queue_size), http="h11", loop="asyncio",
                                lifespan="on", backlog=BACKLOG, limit_concurrency=MAX_CONNECTIONS,
                                timeout_graceful_shutdown=5, access_log=log, log_level="info" if log else "warning",
                                server_header=False)
        self.uvicorn = uvicorn.Server(config)

    def serve_forever(self) -> None:
        try:
            self.uvicorn.run(sockets=[self.sock])
        finally:
            self.sock.close()

    def shutdown(self) -> None:
        self.uvicorn.should_exit = True


def make_server(ms: ModelServer, host: str = "127.0.0.1", port: int = 8000, *, log: bool = False,
                api_key: str | None = None, queue_size: int = QUEUE_SIZE) -> Server:
    """A server for ``ms`` bound to host:port; with ``api_key``, requests need ``Authorization: Bearer``."""
    return Server(ms, host, port, log=log, api_key=api_key, queue_size=queue_size)
