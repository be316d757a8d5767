"""``kamado chat``: talk to a model folder in the terminal (its chat template, streamed tokens)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

HELP = ("commands: /reset (forget the conversation), /system TEXT (set the system prompt; empty clears it), "
        "/temperature X (0 = greedy), /max-new-tokens N, /help, /exit")


class Chat:
    """A conversation with one model: the messages so far and the settings of the next reply."""

    def __init__(self, model: Any, tok: Any, *, system: str | None, max_new_tokens: int, temperature: float,
                 top_p: float, seed: int | None) -> None:
        from kamado.serve.server import FALLBACK_STOP

        self.model, self.tok = model, tok
        self.system, self.max_new_tokens, self.temperature, self.top_p = system, max_new_tokens, temperature, top_p
        self.seed = seed
        self.messages: list[dict[str, str]] = []
        self.templated = bool(getattr(tok, "chat_template", None))
        # the turn header of kamado's template (and of the fallback one): a reply ends before the next one
        self.stops = [s.strip("\n") for s in FALLBACK_STOP]
        self.max_len = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)

    def reset(self) -> None:
        self.messages = []

    def prompt_ids(self) -> list[int]:
        """The conversation rendered with the chat template (fallback: a plain instruction layout), ending with
        the assistant header; the oldest turns are dropped when it does not fit the context window."""
        from kamado.serve.server import chat_render
        from kamado.tokenizer.text import encode_chat

        turns = list(self.messages)
        while True:
            msgs = ([{"role": "system", "content": self.system}] if self.system else []) + turns
            ids = encode_chat(self.tok, msgs, add_generation_prompt=True, render=chat_render(self.tok)).ids
            bos = self.tok.bos_token_id
            if bos is not None and (not ids or ids[0] != bos):
                ids = [bos, *ids]
            if len(ids) + self.max_new_tokens <= self.max_len or len(turns) <= 1:
                room = max(1, self.max_len - self.max_new_tokens)
                return ids[-room:]
            turns = turns[2:] if len(turns) > 2 else turns[1:]

    def reply(self, user: str) -> Iterator[str]:
        """Add the user's turn, stream the answer's text pieces, then add the answer to the conversation."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        from kamado.eval.generate import _StopOnStrings

        self.messages.append({"role": "user", "content": user})
        ids = self.prompt_ids()
        eos = self.tok.eos_token_id
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else (eos if eos is not None else 0)
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
        dev = next(self.model.parameters()).device
        kw: dict[str, Any] = {
            "input_ids": torch.tensor([ids], device=dev), "attention_mask": torch.ones((1, len(ids)), dtype=torch.long,
                                                                                       device=dev),
            "max_new_tokens": max(1, min(self.max_new_tokens, self.max_len - len(ids))), "pad_token_id": pad,
            "eos_token_id": eos, "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_StopOnStrings(self.tok, self.stops, len(ids))])}
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.seed is not None:
            torch.manual_seed(self.seed)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kw)
            except BaseException as e:  # shown in the caller's thread
                errors.append(e)
                streamer.end()

        th = threading.Thread(target=run, daemon=True)
        th.start()
        text, shown = "", 0
        hold = max((len(s) for s in self.stops), default=0)
        for piece in streamer:
            text += piece
            cut = min((text.find(s) for s in self.stops if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
                break
            safe = len(text) - hold  # keep back what could be the start of a stop string
            if safe > shown:
                yield text[shown:safe]
                shown = safe
        th.join()
        if errors:
            self.messages.pop()
            raise errors[0]
        text = text.rstrip()
        if len(text) > shown:
            yield text[shown:]
        self.messages.append({"role": "assistant", "content": text})

    def command(self, line: str, out: TextIO) -> bool:
        """Handle a ``/command``; False on ``/exit``."""
        cmd, _, arg = line[1:].partition(" ")
        cmd, arg = cmd.lower(), arg.strip()
        if cmd in ("exit", "quit", "q"):
            return False
        if cmd == "reset":
            self.reset()
            print("(conversation cleared)", file=out)
        elif cmd == "system":
            self.system = arg or None
            self.reset()
            print(f"(system prompt {'set' if arg else 'cleared'}; conversation cleared)", file=out)
        elif cmd in ("temperature", "temp", "t"):
            try:
                self.temperature = max(0.0, float(arg))
                print(f"(temperature {self.temperature:g})", file=out)
            except ValueError:
                print("(usage: /temperature 0.7)", file=out)
        elif cmd in ("max-new-tokens", "max"):
            try:
                self.max_new_tokens = max(1, int(arg))
                print(f"(max new tokens {self.max_new_tokens})", file=out)
            except ValueError:
                print("(usage: /max-new-tokens 256)", file=out)
        else:
            print(HELP, file=out)
        return True


def chat(
    model_dir: Annotated[Path, typer.Argument(help="Hugging Face model folder, e.g. runs/tiny/tune/full/hf "
                                              "(a stage folder such as runs/tiny/tune/full works too).")],
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest reply, in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold.")] = 0.9,
    seed: Annotated[int | None, typer.Option(help="Random seed (repeatable sampled replies).")] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32 or bfloat16.")] = "float32",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: 1 for models under 50M "
                                                "parameters, else torch's choice).")] = None,
) -> None:
    """Chat with a model in the terminal: the model's chat template, replies streamed as they are generated.

    Commands: /reset, /system TEXT, /temperature X, /max-new-tokens N, /help, /exit (or Ctrl-D).

    When standard input is not a terminal, every non-empty input line is one user turn (lines starting with /
    are commands) and each reply is printed on its own line: handy for scripts and tests.

    Examples:
      kamado chat runs/tiny/tune/full/hf
      kamado chat runs/tiny/tune/lora/hf --temperature 0 --system "短く答えてください。"
      printf '日本の首都は？\\nそれはどこにありますか？\\n' | kamado chat runs/tiny/tune/full/hf
    """
    from kamado.config import KamadoError

    if dtype not in ("auto", "float32", "bfloat16"):
        raise KamadoError(f"--dtype {dtype!r}: expected auto, float32 or bfloat16")
    import torch

    from kamado.eval.harness import load_model

    if not (model_dir / "config.json").is_file() and (model_dir / "hf" / "config.json").is_file():
        model_dir = model_dir / "hf"  # a stage folder (runs/tiny/tune/full): its exported model
    model, tok = load_model(model_dir, dtype=dtype)
    if threads:
        torch.set_num_threads(threads)
    elif sum(p.numel() for p in model.parameters()) < 50_000_000:
        torch.set_num_threads(1)
    c = Chat(model, tok, system=system, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
             seed=seed)
    if not sys.stdin.isatty():
        _batch(c, sys.stdin, sys.stdout)
        return
    _interactive(c, model_dir)


def _batch(c: Chat, inp: TextIO, out: TextIO) -> None:
    for raw in inp:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not c.command(line, sys.stderr):
                return
            continue
        out.write("".join(c.reply(line)).replace("\n", " ") + "\n")
        out.flush()


def _interactive(c: Chat, model_dir: Path) -> None:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    from kamado.ui import console

    how = "its chat template" if c.templated else "no chat template: a plain instruction layout"
    console.print(f"[bold]kamado chat[/] with {model_dir} ({how}). {HELP}", highlight=False, markup=True)
    while True:
        try:
            line = input("\001\033[1;32m\002you>\001\033[0m\002 ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not line:
            continue
        if line.startswith("/"):
            if not c.command(line, sys.stdout):
                return
            continue
        sys.stdout.write("\033[1;34mmodel>\033[0m ")
        try:
            for piece in c.reply(line):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:  # stop this reply, keep the chat
            c.messages.pop()
            sys.stdout.write(" (interrupted)")
        sys.stdout.write("\n")
