"""``kamado serve``: an OpenAI-compatible HTTP server for a model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve(
    model_dir: Annotated[Path, typer.Argument(help="Hugging Face model folder (config.json + tokenizer).")],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8000,
    name: Annotated[str | None, typer.Option(help="Model id in the API (default: the folder's name).")] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32 or bfloat16.")] = "float32",
    max_tokens: Annotated[int, typer.Option(help="Default max_tokens when a request gives none.")] = 256,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: 1 for models "
                                                "under 50M parameters, else torch's choice).")] = None,
    queue_size: Annotated[int, typer.Option(min=1, help="Generation requests running or waiting; beyond it "
                                            "requests get 503 with Retry-After.")] = 32,
    log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="KAMADO_API_KEY", show_envvar=True,
                                                help="Require 'Authorization: Bearer KEY' on every request "
                                                "(401 otherwise; /health stays open).")] = None,
) -> None:
    """Serve a model over the OpenAI API: GET /v1/models, POST /v1/chat/completions, POST /v1/completions.

    Chat requests use the tokenizer's chat template (kamado's tune template when it has none), exactly as
    `kamado chat`; text in messages and prompts is text (a typed "</s>" is not an end-of-sequence token).
    Supports temperature, top_p, max_tokens, stop, seed and stream. The model answers one request at a time;
    up to --queue-size wait, the rest get 503 with Retry-After; a client that disconnects cancels its
    request. Bad requests get 400 with an OpenAI-style error. Runs on uvicorn; Ctrl-C stops it.

    Examples:
      kamado serve runs/tiny/tune/full/hf --port 8000
      KAMADO_API_KEY=s3cret kamado serve runs/tiny/tune/full/hf --host 0.0.0.0   (clients send the key as a Bearer token)
      curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "full", "messages": [{"role": "user", "content": "日本の首都は？"}], "max_tokens": 32}'
    """
    from kamado.config import KamadoError

    if dtype not in ("auto", "float32", "bfloat16"):
        raise KamadoError(f"--dtype {dtype!r}: expected auto, float32 or bfloat16")
    import torch

    from kamado.serve.server import ModelServer, make_server

    ms = ModelServer(model_dir, name, dtype=dtype, default_max_tokens=max_tokens)
    if threads:
        torch.set_num_threads(threads)
    elif sum(p.numel() for p in ms.model.parameters()) < 50_000_000:
        torch.set_num_threads(1)  # small ops: a second OpenMP thread costs more than it gives
    try:
        srv = make_server(ms, host, port, log=log, api_key=api_key or None, queue_size=queue_size)
    except OSError as e:
        raise KamadoError(f"cannot listen on {host}:{port}: {e}") from None
    h, p = srv.server_address[:2]
    print(f"kamado serve: model {ms.name!r} at http://{h}:{p}/v1" + (" (API key required)" if api_key else ""),
          flush=True)
    if not api_key and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {host} without --api-key: anyone who can reach this address can use the model",
              flush=True)
    try:
        srv.serve_forever()  # uvicorn stops gracefully on Ctrl-C / SIGTERM, then re-raises the signal
    except KeyboardInterrupt:
        pass
