"""Batched log-likelihood scoring of answer choices, with one shared-prefix pass per question.

Every choice of a question shares the question's prompt (often a long few-shot prompt), so the prompt is
run once: the prompt and all choices are packed into one sequence

    [prompt tokens][choice 1 tokens][choice 2 tokens] ... [choice n tokens]

with a tree-shaped 4-D attention mask (each choice sees the prompt and itself, never the other choices)
and position ids that restart after the prompt for every choice. Several questions are padded into one
batch, so a whole batch of questions costs a single forward pass, and the output projection (the vocabulary
matmul, which dominates small models) is applied only at the positions that predict choice tokens.

Tokenisation follows lm-eval: a choice's tokens are those of ``encode(context + choice)`` past the longest
common prefix with ``encode(context)``, so a token that merges across the boundary is handled exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ChoiceScore:
    """Log-likelihood of one continuation given its context."""

    loglik: float
    greedy: bool  # every continuation token is the model's argmax
    ntokens: int


@dataclass
class _Packed:
    ids: list[int]  # shared prefix + all branches
    seg: list[int]  # 0 = shared prefix, i + 1 = branch i
    pos: list[int]  # position ids
    pred: list[list[tuple[int, int]]]  # per choice: (index of predicting position, target id)


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def encode_request(ctx_ids: list[int], wholes: list[list[int]], max_len: int, bos: int) -> _Packed:
    """Pack one context and its choices (token lists of context+choice) into a tree sequence."""
    lcps = [_lcp(ctx_ids, w) for w in wholes]
    lcps = [min(p, len(w) - 1) if len(w) > 1 else p for p, w in zip(lcps, wholes, strict=True)]
    shared = min(lcps) if lcps else 0
    if shared == 0:  # nothing to condition on: start from BOS like lm-eval's EOT prefix
        wholes = [[bos, *w] for w in wholes]
        lcps = [p + 1 for p in lcps]
        shared = 1
    prefix = list(wholes[0][:shared])
    branches = [w[shared:] for w in wholes]
    nscore = [len(w) - p for w, p in zip(wholes, lcps, strict=True)]
    longest = max((len(b) for b in branches), default=0)
    if longest >= max_len:  # a choice longer than the context window: keep its last tokens
        branches = [b[-(max_len - 1):] for b in branches]
        nscore = [min(n, max_len - 1) for n in nscore]
        longest = max_len - 1
    cut = shared + longest - max_len
    if cut > 0:
        prefix = prefix[cut:]
    s = len(prefix)
    ids, seg, pos = list(prefix), [0] * s, list(range(s))
    pred: list[list[tuple[int, int]]] = []
    for i, (b, n) in enumerate(zip(branches, nscore, strict=True)):
        start = len(ids)
        ids += b
        seg += [i + 1] * len(b)
        pos += list(range(s, s + len(b)))
        rows = []
        for j in range(len(b) - n, len(b)):
            prev = start + j - 1 if j > 0 else s - 1  # the position whose output predicts b[j]
            rows.append((prev, b[j]))
        pred.append(rows)
    return _Packed(ids, seg, pos, pred)


def tree_mask(seg: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B,1,T,T] mask: causal, and a branch sees only the shared prefix (seg 0) and itself.

    Padding (seg -1) attends to earlier padding only, so no row is fully masked.
    """
    t = seg.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=seg.device).tril()
    q = seg[:, :, None]
    k = seg[:, None, :]
    allowed = causal & (((k == 0) & (q >= 0)) | (k == q))
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seg.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def hidden_and_head(model: Any) -> tuple[Any, Any]:
    """The decoder stack and the output projection of a causal LM (so logits are computed only where needed)."""
    head = model.get_output_embeddings()
    body = getattr(model, "model", None)
    if body is None and hasattr(model, "get_decoder"):
        body = model.get_decoder()
    return body, head


@torch.inference_mode()
def _forward_selected(model: Any, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor,
                      rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Log-probabilities [N, V] (float32) at the selected (row, col) positions of one batch."""
    body, head = hidden_and_head(model)
    if body is not None and head is not None:
        h = body(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
        logits = head(h[rows, cols])
    else:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[rows, cols]
    return torch.log_softmax(logits.float(), dim=-1)


def model_max_len(model: Any, default: int = 2048) -> int:
    """The model's context window (max_position_embeddings)."""
    return int(getattr(model.config, "max_position_embeddings", None) or default)


def score_choices(
    model: Any,
    tokenizer: Any,
    requests: Sequence[tuple[str, Sequence[str]]],
    *,
    batch_size: int = 16,
    max_tokens: int = 16384,
    max_len: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[list[ChoiceScore]]:
    """Score ``(context, [choice, ...])`` requests; returns per request one :class:`ChoiceScore` per choice.

    Batches hold up to ``batch_size`` questions and about ``max_tokens`` packed tokens (padding included).
    """
    max_len = max_len or model_max_len(model)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else (tokenizer.eos_token_id or 0)
    texts: list[str] = []
    for ctx, choices in requests:
        texts.append(ctx)
        texts.extend(ctx + c for c in choices)
    # evaluation text is text: a "</s>" in a question is characters (kamado.tokenizer.text)
    enc = tokenizer(texts, add_special_tokens=True, split_special_tokens=True)["input_ids"] if texts else []
    packed: list[_Packed] = []
    i = 0
    for _, choices in requests:
        packed.append(encode_request(enc[i], enc[i + 1:i + 1 + len(choices)], max_len, bos))
        i += 1 + len(choices)
    order = sorted(range(len(packed)), key=lambda j: -len(packed[j].ids))
    out: list[list[ChoiceScore]] = [[] for _ in packed]
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    start = 0
    while start < len(order):
        t = len(packed[order[start]].ids)
        n = max(1, min(batch_size, max_tokens // max(t, 1)))
        batch = order[start:start + n]
        start += n
        ids = torch.full((len(batch), t), pad, dtype=torch.long)
        pos = torch.zeros((len(batch), t), dtype=torch.long)
        seg = torch.full((len(batch), t), -1, dtype=torch.long)
        rows, cols, tgts, owner = [], [], [], []
        for b, j in enumerate(batch):
            p = packed[j]
            L = len(p.ids)
            ids[b, :L] = torch.tensor(p.ids)
            pos[b, :L] = torch.tensor(p.pos)
            seg[b, :L] = torch.tensor(p.seg)
            for c, pr in enumerate(p.pred):
                for col, tgt in pr:
                    rows.append(b)
                    cols.append(col)
                    tgts.append(tgt)
                    owner.append((j, c))
        lp = _forward_selected(model, ids.to(dev), pos.to(dev), tree_mask(seg, dtype).to(dev),
                               torch.tensor(rows, device=dev), torch.tensor(cols, device=dev))
        tgt_t = torch.tensor(tgts, device=dev)
        tok_lp = lp.gather(1, tgt_t[:, None])[:, 0].tolist()
        greedy = (lp.argmax(-1) == tgt_t).tolist()
        acc: dict[tuple[int, int], list] = {}
        for (j, c), v, g in zip(owner, tok_lp, greedy, strict=True):
            a = acc.setdefault((j, c), [0.0, True, 0])
            a[0] += v
            a[1] = a[1] and g
            a[2] += 1
        for j in batch:
            out[j] = [ChoiceScore(*acc.get((j, c), [0.0, True, 0])) for c in range(len(packed[j].pred))]
        if progress:
            progress(len(batch))
    return out


@dataclass
class TextNLL:
    """Summed negative log-likelihood of one text (or token stream) in nats."""

    nll: float
    ntokens: int


@torch.inference_mode()
def score_token_streams(
    model: Any,
    streams: Sequence[Sequence[int]],
    *,
    bos: int | None,
    window: int = 512,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
    windows: list[tuple[int, float, int]] | None = None,
) -> list[TextNLL]:
    """NLL of every token of each stream, predicted left to right in windows of ``window`` tokens.

    A stream that does not start with ``bos`` is conditioned on ``bos`` (its first token is scored too); a
    leading ``bos`` is not scored. Windows after the first start with the last token of the previous window,
    so every token is scored exactly once (with at most ``window - 1`` tokens of context). When ``windows``
    is a list, ``(stream index, nll, tokens)`` of every window is appended to it.
    """
    max_len = min(window, model_max_len(model))
    chunks: list[tuple[int, list[int]]] = []  # (stream index, tokens; first token is context only)
    for si, s in enumerate(streams):
        toks = list(s)
        if bos is not None and (not toks or toks[0] != bos):
            toks = [bos, *toks]
        if len(toks) < 2:
            continue
        i = 0
        while i < len(toks) - 1:
            chunks.append((si, toks[i:i + max_len]))
            i += max_len - 1
    res = [TextNLL(0.0, 0) for _ in streams]
    body, head = hidden_and_head(model)
    dev = next(model.parameters()).device
    order = sorted(range(len(chunks)), key=lambda j: -len(chunks[j][1]))
    for b0 in range(0, len(order), batch_size):
        batch = [chunks[j] for j in order[b0:b0 + batch_size]]
        t = len(batch[0][1])
        ids = torch.zeros((len(batch), t), dtype=torch.long)
        att = torch.zeros((len(batch), t), dtype=torch.long)
        for b, (_, toks) in enumerate(batch):
            ids[b, :len(toks)] = torch.tensor(toks)
            att[b, :len(toks)] = 1
        ids, att = ids.to(dev), att.to(dev)
        if body is not None and head is not None:
            h = body(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
        else:
            h = None
        for b, (si, toks) in enumerate(batch):
            n = len(toks) - 1
            if h is not None:
                logits = head(h[b, :n])
            else:
                logits = model(input_ids=ids[b:b + 1, :len(toks)], use_cache=False).logits[0, :n]
            lp = torch.log_softmax(logits.float(), -1)
            tgt = ids[b, 1:n + 1]
            nll = -float(lp.gather(1, tgt[:, None]).sum())
            res[si].nll += nll
            res[si].ntokens += n
            if windows is not None:
                windows.append((si, nll, n))
        if progress:
            progress(len(batch))
    return res
