"""Text generation for evaluation and serving: batched, with stop strings, temperature/top-p and seeds."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

_LOCK = threading.Lock()  # one generation at a time per process (the global RNG and the CPU are shared)


@dataclass
class Generation:
    """One completion."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


class _StopOnStrings:
    """Stopping criterion: a row is done once its new text contains any stop string."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_len: int) -> None:
        self.tok, self.stops, self.prompt_len = tokenizer, [s for s in stops if s], prompt_len
        self.longest = max((len(s) for s in self.stops), default=0)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if not self.stops:
            return done
        tail = input_ids[:, self.prompt_len:][:, -(self.longest + 8):]
        for i, row in enumerate(tail.tolist()):
            text = self.tok.decode(row, skip_special_tokens=True)
            done[i] = any(s in text for s in self.stops)
        return done


class _StopWhen:
    """Stopping criterion: every row is done once ``cancelled()`` is true (a server's client went away)."""

    def __init__(self, cancelled: Callable[[], bool]) -> None:
        self.cancelled = cancelled

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.cancelled(), dtype=torch.bool, device=input_ids.device)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text before the first stop string, and whether one was found."""
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str | list[int]],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    batch_size: int = 8,
    add_special_tokens: bool = True,
    cancelled: Callable[[], bool] | None = None,
) -> list[Generation]:
    """Complete each prompt (text, or token ids); greedy when ``temperature`` is 0.

    A text prompt is text: special-token strings in it are characters; a prompt that needs the chat
    template's special tokens comes as ids (:func:`kamado.tokenizer.text.encode_chat`).

    Prompts longer than the context window keep their last tokens. Completions are cut before the first
    stop string; ``finish_reason`` is ``stop`` when a stop string or EOS ended them. ``cancelled`` is asked
    after every new token: once it is true, generation ends there (what was generated is returned).
    """
    from transformers import StoppingCriteriaList

    max_len = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    dev = next(model.parameters()).device
    enc: list[list[int]] = []
    for p in prompts:
        ids = list(p) if not isinstance(p, str) else tokenizer(
            p, add_special_tokens=add_special_tokens, split_special_tokens=True)["input_ids"]  # text is text
        room = max(1, max_len - max_new_tokens)
        enc.append(ids[-room:] if len(ids) > room else ids)
    out: list[Generation | None] = [None] * len(enc)
    order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))
    for b0 in range(0, len(order), batch_size):
        batch = order[b0:b0 + batch_size]
        t = max(len(enc[i]) for i in batch)
        ids = torch.full((len(batch), t), pad, dtype=torch.long)
        att = torch.zeros((len(batch), t), dtype=torch.long)
        for r, i in enumerate(batch):  # left padding
            ids[r, t - len(enc[i]):] = torch.tensor(enc[i])
            att[r, t - len(enc[i]):] = 1
        new = min(max_new_tokens, max_len - t)
        criteria = [_StopOnStrings(tokenizer, stop, t), *([_StopWhen(cancelled)] if cancelled else [])]
        kw: dict[str, Any] = {"max_new_tokens": max(new, 1), "pad_token_id": pad, "eos_token_id": eos,
                              "stopping_criteria": StoppingCriteriaList(criteria)}
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with _LOCK:
            if seed is not None:
                torch.manual_seed(seed)
            gen = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), **kw)
        for r, i in enumerate(batch):
            toks = gen[r, t:].tolist()
            hit_eos = eos is not None and eos in toks
            if hit_eos:
                toks = toks[: toks.index(eos)]
            while toks and toks[-1] == pad and pad != eos:
                toks.pop()
            text = tokenizer.decode(toks, skip_special_tokens=True)
            text, hit_stop = cut_at_stop(text, stop)
            out[i] = Generation(text, "stop" if hit_eos or hit_stop else "length", len(enc[i]),
                                len(toks) + (1 if hit_eos else 0))
    return [g for g in out if g is not None]
