"""Held-out instructions: answer with the chat template, score the answer against the reference answer.

Task ``dolly-ja-heldout``: the last :data:`HELDOUT` records of ``dolly-ja``. The tune stage reads
instruction records from the start of the file (``tune.max_examples``), so a tune with
``max_examples <= len(file) - HELDOUT`` never trained on them. ``dolly-ja-select`` and ``dolly-ja-report`` are
its two fixed halves in file order (``Task.part`` (0, 2) and (1, 2)): choose a setting on one, report it on the
other. Records whose prompt is longer than :data:`MAX_PROMPT_CHARS` are left out (tiny models have short
contexts).

Answer loss: the reference answer's negative log-likelihood given the prompt, on the tokens ``kamado tune``
trains on (:func:`kamado.tune.sft.encode_chat`: the answer and its EOS), the chat truncated to the model's
context. ``answer_loss`` is nats per answer token over all items (token-weighted, as tune's validation loss),
with a delta-method standard error over items.

Scores of the greedy answer, both in 0..100 and tokenizer-independent (characters, whitespace removed):

- ``chrf``: chrF (Popović 2015) as sacrebleu computes it with ``word_order=0``: character n-gram precision
  and recall averaged over n = 1..6, combined as F-beta with beta = 2 (recall weighted).
- ``rouge_l``: F1 of the longest common character subsequence.

Reported as means over the examples with standard errors, plus the mean answer length in characters.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from kamado.config import KamadoError
from kamado.eval import metrics as M

HELDOUT = 500
MAX_PROMPT_CHARS = 200
CHRF_ORDER = 6
CHRF_BETA = 2.0


def _chars(s: str) -> str:
    return "".join(s.split())


def chrf(hyp: str, ref: str, order: int = CHRF_ORDER, beta: float = CHRF_BETA) -> float:
    """Sentence chrF (0..100): character n-gram F-beta averaged over n = 1..order, whitespace removed."""
    h, r = _chars(hyp), _chars(ref)
    precs, recs = [], []
    for n in range(1, order + 1):
        hc = Counter(h[i:i + n] for i in range(len(h) - n + 1))
        rc = Counter(r[i:i + n] for i in range(len(r) - n + 1))
        if not rc:  # reference shorter than n: the order does not count (as sacrebleu's effective order)
            continue
        hit = sum((hc & rc).values())
        precs.append(hit / sum(hc.values()) if hc else 0.0)
        recs.append(hit / sum(rc.values()))
    if not recs:
        return 0.0
    p, rr = sum(precs) / len(precs), sum(recs) / len(recs)
    if p == 0.0 and rr == 0.0:
        return 0.0
    b2 = beta * beta
    return 100.0 * (1 + b2) * p * rr / (b2 * p + rr)


def rouge_l(hyp: str, ref: str) -> float:
    """ROUGE-L F1 (0..100) over characters, whitespace removed."""
    h, r = _chars(hyp), _chars(ref)
    if not h or not r:
        return 0.0
    prev = [0] * (len(r) + 1)
    for a in h:
        cur = [0]
        for j, b in enumerate(r):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, rr = lcs / len(h), lcs / len(r)
    return 100.0 * 2 * p * rr / (p + rr)


def heldout_chats(records: list[dict[str, Any]], *, limit: int | None, seed: int, heldout: int = HELDOUT,
                  part: tuple[int, int] = (0, 1)) -> list[tuple[str, list[dict[str, str]], str]]:
    """``(id, messages without the answer, reference answer)`` of the held-out records, sampled by seed.

    ``part`` ``(i, k)``: only the ``i``-th of ``k`` contiguous parts (in file order) of the held-out records.
    """
    from kamado.tune.templates import record_to_messages

    i, k = part
    if not 0 <= i < k:
        raise KamadoError(f"held-out part {part}: expected (i, k) with 0 <= i < k")
    start = max(0, len(records) - heldout)
    n = len(records) - start
    items = []
    for r in range(start + n * i // k, start + n * (i + 1) // k):
        msgs = record_to_messages(records[r])
        if msgs is None or msgs[-1]["role"] != "assistant":
            continue
        prompt = msgs[:-1]
        if sum(len(m["content"]) for m in prompt) > MAX_PROMPT_CHARS:
            continue
        items.append((str(records[r].get("index", r)), prompt, msgs[-1]["content"]))
    if limit is not None and limit < len(items):
        pick = sorted(random.Random(f"{seed}:instruct:subset").sample(range(len(items)), limit))
        items = [items[j] for j in pick]
    return items


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The chat with the assistant header appended (the tokenizer's chat template, else kamado's), encoded
    as ``kamado tune`` encodes it: the messages' contents are text."""
    from kamado.tokenizer.text import encode_chat
    from kamado.tune.templates import render

    fallback = None if getattr(tokenizer, "chat_template", None) else (
        lambda m, g: render(m, tokenizer.bos_token or "", tokenizer.eos_token or "", add_generation_prompt=g))
    return encode_chat(tokenizer, messages, add_generation_prompt=True, render=fallback).ids


def instruct_items(task: Any, root: Any, *, limit: int | None,
                   seed: int) -> list[tuple[str, list[dict[str, str]], str]]:
    """The held-out items of an ``instruct`` task (its ``dataset`` from the data root)."""
    from kamado.catalog import resolve
    from kamado.jsonl import read_jsonl

    return heldout_chats(read_jsonl(resolve(task.dataset, root)), limit=limit, seed=seed, part=task.part)


def answer_nll(model: Any, tokenizer: Any, items: list[tuple[str, list[dict[str, str]], str]], *,
               batch_size: int, progress: Callable[[int], Any] | None = None) -> list[tuple[float, int]]:
    """``(sum of -log p in nats, tokens)`` of each item's reference answer, on the tokens tune trains on.

    Each chat with its answer is encoded as :func:`kamado.tune.sft.encode_chat` encodes it and truncated to the
    model's context; batches are right-padded with an attention mask; log-softmax in float32.
    """
    import torch

    from kamado.eval.scorer import hidden_and_head, model_max_len
    from kamado.tune.sft import IGNORE, encode_chat

    max_len = model_max_len(model)
    exs = []
    for _, msgs, ref in items:
        ex = encode_chat(tokenizer, [*msgs, {"role": "assistant", "content": ref}])
        exs.append((ex.ids[:max_len], ex.labels[:max_len]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    body, head = hidden_and_head(model)
    dev = next(model.parameters()).device
    out: list[tuple[float, int]] = [(0.0, 0)] * len(exs)
    order = sorted(range(len(exs)), key=lambda j: -len(exs[j][0]))
    with torch.inference_mode():
        for b0 in range(0, len(order), batch_size):
            batch = order[b0:b0 + batch_size]
            t = len(exs[batch[0]][0])
            ids = torch.full((len(batch), t), pad, dtype=torch.long)
            att = torch.zeros((len(batch), t), dtype=torch.long)
            tgt = torch.full((len(batch), t), IGNORE, dtype=torch.long)
            for r, j in enumerate(batch):
                x, y = exs[j]
                ids[r, :len(x)] = torch.tensor(x)
                att[r, :len(x)] = 1
                tgt[r, :len(y) - 1] = torch.tensor(y[1:])  # position t predicts token t + 1
            rows, cols = (tgt != IGNORE).nonzero(as_tuple=True)
            ids, att = ids.to(dev), att.to(dev)
            if body is not None and head is not None:
                logits = head(body(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state[rows, cols])
            else:
                logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[rows, cols]
            lp = torch.log_softmax(logits.float(), -1).gather(1, tgt[rows, cols].to(dev)[:, None])[:, 0]
            per_row = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, rows, -lp.double().cpu())
            for r, j in enumerate(batch):
                out[j] = (float(per_row[r]), int((tgt[r] != IGNORE).sum()))
            if progress:
                progress(len(batch))
    return out


def evaluate_instruct(model: Any, tokenizer: Any, items: list[tuple[str, list[dict[str, str]], str]], *,
                      max_new_tokens: int, batch_size: int, generate_answers: bool = True,
                      progress: Callable[[int], Any] | None = None) -> tuple[dict[str, Any], list[dict]]:
    """The references' answer loss and greedy answers scored against the references (see the module doc).

    ``generate_answers=False`` skips generation (the answer loss alone: one forward pass per batch).
    ``progress(n)`` counts items: each item once for its answer loss, and once more when generated.
    """
    from kamado.eval.generate import generate

    nll = answer_nll(model, tokenizer, items, batch_size=batch_size, progress=progress)
    loss, loss_se = M.ratio_stderr([a for a, _ in nll], [n for _, n in nll])
    res: dict[str, Any] = {"answer_loss": loss, "answer_loss_stderr": loss_se,
                           "answer_tokens": sum(n for _, n in nll), "n": len(items)}
    details = [{"id": i, "prompt": msgs[-1]["content"][-300:], "reference": ref, "answer_nll": round(a, 4),
                "answer_tokens": n} for (i, msgs, ref), (a, n) in zip(items, nll, strict=True)]
    if not generate_answers:
        return res, details
    prompts = [prompt_ids(tokenizer, msgs) for _, msgs, _ in items]
    gens = []
    for b0 in range(0, len(prompts), batch_size):
        chunk = prompts[b0:b0 + batch_size]
        # the template already starts with BOS; stop where the model opens the next turn
        gens += generate(model, tokenizer, chunk, max_new_tokens=max_new_tokens, stop=("### 指示",),
                         batch_size=batch_size, add_special_tokens=False)
        if progress:
            progress(len(chunk))
    cf = [chrf(g.text.strip(), ref) for g, (_, _, ref) in zip(gens, items, strict=True)]
    rl = [rouge_l(g.text.strip(), ref) for g, (_, _, ref) in zip(gens, items, strict=True)]
    m_cf, se_cf = M.mean_stderr(cf)
    m_rl, se_rl = M.mean_stderr(rl)
    res |= {"chrf": m_cf, "chrf_stderr": se_cf, "rouge_l": m_rl, "rouge_l_stderr": se_rl,
            "answer_chars": sum(len(g.text.strip()) for g in gens) / max(1, len(gens))}
    for d, g, a, b in zip(details, gens, cf, rl, strict=True):
        d |= {"pred": g.text.strip(), "chrf": round(a, 3), "rouge_l": round(b, 3)}
    return res, details
