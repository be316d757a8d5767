"""Instruction data for supervised fine-tuning: records → chats → token ids with prompt masking → batches.

Loss is taken on assistant tokens only: each chat is rendered once with the tokenizer's chat template,
the character spans of the assistant answers (content + EOS) are found from prefix renders, and a token
gets a label only when its characters lie wholly inside such a span; every other label is ``-100``.
Examples are packed greedily into rows of at most ``seq_len`` tokens (or one per row), and
:class:`SFTBatches` serves them as a resumable ``BatchSource`` for :class:`kamado.train.trainer.Trainer`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.jsonl import iter_jsonl
from kamado.stage import DEFAULT_SEED
from kamado.tokenizer.text import encode_chat as encode_rendered
from kamado.tune.templates import record_to_messages, render

IGNORE = -100


@dataclass
class Example:
    """One tokenized chat: ids and labels of equal length (labels -100 outside assistant answers)."""

    ids: list[int]
    labels: list[int]
    source: str = ""

    @property
    def targets(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class SFTData:
    """Train and validation examples plus the accounting of what was read, dropped and truncated."""

    train: list[Example]
    valid: list[Example]
    stats: dict[str, Any] = field(default_factory=dict)


def read_chats(path: Path, limit: int | None = None) -> tuple[list[list[dict[str, str]]], dict[str, int]]:
    """Chats from a JSONL file of ``{instruction, input, output}`` or ``{messages}`` records.

    A line that is not JSON raises :class:`KamadoError` naming file and line; records with neither
    shape (or an empty answer) are counted as ``skipped``.
    """
    files = sorted(p for p in path.rglob("*.jsonl*") if p.is_file()) if path.is_dir() else [path]
    chats: list[list[dict[str, str]]] = []
    skipped = 0
    for fp in files:
        for rec in iter_jsonl(fp):
            msgs = record_to_messages(rec) if isinstance(rec, dict) else None
            if msgs is None:
                skipped += 1
                continue
            chats.append(msgs)
            if limit is not None and len(chats) >= limit:
                return chats, {"records": len(chats), "skipped": skipped}
    return chats, {"records": len(chats), "skipped": skipped}


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return render(messages, tokenizer.bos_token or "", tokenizer.eos_token or "", add_generation_prompt)


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character spans ``[start, end)`` of each assistant answer (with EOS)."""
    text = _render(tokenizer, messages)
    eos = tokenizer.eos_token or ""
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True)
        if not text.startswith(prefix):
            raise KamadoError("the chat template is not prefix-consistent; cannot find the assistant turns")
        start = len(prefix)
        answer = m["content"] + eos
        if text.startswith(answer, start):
            end = start + len(answer)
        else:  # a template that decorates the answer: train on the whole rendered turn
            end = len(_render(tokenizer, messages[: i + 1]))
        spans.append((start, end))
    return text, spans


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], source: str = "") -> Example:
    """Token ids of a rendered chat, labelled only where tokens lie inside assistant answers (message contents
    are text: a ``</s>`` typed in an answer is not an EOS, see :func:`kamado.tokenizer.text.encode_chat`)."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = encode_rendered(tokenizer, messages, render=lambda m, g: _render(tokenizer, m, g), offsets=True)
    if enc.text != text:
        raise KamadoError("the chat template renders the same chat differently twice; cannot mask the answers")
    ids = list(enc.ids)
    labels = [IGNORE] * len(ids)
    k = 0
    for t, (a, b) in enumerate(enc.offsets):
        while k < len(spans) and a >= spans[k][1]:
            k += 1
        if k == len(spans):
            break
        s, e = spans[k]
        if a >= s and b <= e and b > a:
            labels[t] = ids[t]
    return Example(ids, labels, source)


def split_valid(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the train and held-out validation examples (a seeded shuffle; at least one of each)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_valid = min(max(1, round(n * fraction)), n - 1) if fraction > 0 and n > 1 else 0
    return sorted(order[n_valid:]), sorted(order[:n_valid])


def prepare(
    tokenizer: Any,
    sources: Sequence[tuple[str, Path]],
    seq_len: int,
    *,
    valid_fraction: float = 0.05,
    max_examples: int | None = None,
    seed: int = DEFAULT_SEED,
) -> SFTData:
    """Read every source, tokenize and mask each chat, truncate to ``seq_len``, split off validation."""
    train: list[Example] = []
    valid: list[Example] = []
    stats: dict[str, Any] = {"records": 0, "skipped": 0, "truncated": 0, "dropped": 0, "sources": {}}
    for name, path in sources:
        chats, st = read_chats(path, max_examples)
        exs: list[Example] = []
        truncated = dropped = 0
        for msgs in chats:
            ex = encode_chat(tokenizer, msgs, name)
            if len(ex.ids) > seq_len:
                ex = Example(ex.ids[:seq_len], ex.labels[:seq_len], name)
                truncated += 1
            if ex.targets == 0:
                dropped += 1
                continue
            exs.append(ex)
        tr, va = split_valid(len(exs), valid_fraction, seed)
        train += [exs[i] for i in tr]
        valid += [exs[i] for i in va]
        stats["records"] += st["records"]
        stats["skipped"] += st["skipped"]
        stats["truncated"] += truncated
        stats["dropped"] += dropped
        stats["sources"][name] = {"records": st["records"], "skipped": st["skipped"], "train": len(tr),
                                  "valid": len(va), "truncated": truncated, "dropped": dropped,
                                  "tokens": sum(len(exs[i].ids) for i in tr),
                                  "target_tokens": sum(exs[i].targets for i in tr)}
    if not train:
        raise KamadoError("no usable instruction examples (every record was empty, skipped or too long)")
    stats["train_examples"] = len(train)
    stats["valid_examples"] = len(valid)
    stats["train_tokens"] = sum(len(e.ids) for e in train)
    stats["train_target_tokens"] = sum(e.targets for e in train)
    return SFTData(train, valid, stats)


def pack(examples: Sequence[Example], seq_len: int, packing: bool = True, seed: int = 0) -> list[Example]:
    """Rows of at most ``seq_len`` tokens: examples (in a seeded order) concatenated greedily, or one each."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    if not packing:
        return [examples[i] for i in order]
    rows: list[Example] = []
    ids: list[int] = []
    labels: list[int] = []
    for i in order:
        ex = examples[i]
        if ids and len(ids) + len(ex.ids) > seq_len:
            rows.append(Example(ids, labels))
            ids, labels = [], []
        ids = ids + ex.ids
        labels = labels + ex.labels
    if ids:
        rows.append(Example(ids, labels))
    return rows


def collate(rows: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded LongTensors ``input_ids`` and ``labels`` (pad labels -100; causal, so no mask needed)."""
    import torch

    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids, dtype=torch.long)
        labels[i, : len(r.labels)] = torch.tensor(r.labels, dtype=torch.long)
    return {"input_ids": ids, "labels": labels}


class SFTBatches:
    """A resumable BatchSource over packed rows: a seeded shuffle per epoch, sharded by rank.

    ``next_batch()`` returns one micro-batch; ``state_dict()`` is ``{epoch, pos, rows, seed}``.
    """

    def __init__(self, rows: Sequence[Example], micro_batch: int, pad_id: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if not rows:
            raise KamadoError("no training rows")
        self.rows = list(rows)
        self.micro_batch = max(1, micro_batch)
        self.pad_id = pad_id
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.pos = 0  # rows consumed (all ranks) in this epoch
        self.step = 0
        self._order = self._perm(0)
        self._last_targets = 0
        self._last_tokens = 0

    def _perm(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(self.seed * 1000003 + epoch).shuffle(order)
        return order

    def next_batch(self) -> dict[str, Any]:
        """The next micro-batch of this rank: ``{"input_ids": [B,T], "labels": [B,T]}``."""
        stride = self.micro_batch * self.world_size
        if self.pos + stride > len(self.rows) and self.pos > 0:
            self.epoch += 1
            self.pos = 0
            self._order = self._perm(self.epoch)
        start = self.pos + self.rank * self.micro_batch
        picks = [self._order[(start + j) % len(self.rows)] for j in range(self.micro_batch)]
        self.pos += stride
        rows = [self.rows[i] for i in picks]
        self._last_targets = sum(r.targets for r in rows)
        self._last_tokens = sum(len(r.ids) for r in rows)
        return collate(rows, self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "rows": len(self.rows), "seed": self.seed,
                "world_size": self.world_size}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("rows") != len(self.rows) or d.get("seed") != self.seed:
            raise KamadoError(f"SFT data changed since the checkpoint (rows {d.get('rows')} → {len(self.rows)}); "
                              "delete the tune folder to start over")
        if d.get("world_size", self.world_size) != self.world_size:
            raise KamadoError(f"checkpoint was written with world_size={d.get('world_size')}, "
                              f"now {self.world_size}")
        self.epoch = int(d["epoch"])
        self.pos = int(d["pos"])
        self._order = self._perm(self.epoch)

    def set_step(self, step: int) -> None:
        self.step = step

    def metrics(self) -> dict[str, float]:
        return {"sft/epoch": round(self.epoch + self.pos / len(self.rows), 4),
                "sft/target_frac": round(self._last_targets / max(1, self._last_tokens), 4)}


def valid_batches(examples: Sequence[Example], micro_batch: int, pad_id: int,
                  max_batches: int | None = None) -> list[dict[str, Any]]:
    """Fixed validation batches (one example per row, in order) for validation loss."""
    rows = list(examples)
    out = [collate(rows[i : i + micro_batch], pad_id) for i in range(0, len(rows), max(1, micro_batch))]
    return out[:max_batches] if max_batches else out


def evaluate_loss(model: Any, batches: Sequence[dict[str, Any]]) -> float:
    """Mean cross-entropy per target token over ``batches`` (labels -100 ignored; next-token shift)."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for b in batches:
                logits = model(input_ids=b["input_ids"]).logits.float()
                shift_logits = logits[:, :-1].reshape(-1, logits.size(-1))
                shift_labels = b["labels"][:, 1:].reshape(-1)
                total += F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE, reduction="sum").item()
                count += int((shift_labels != IGNORE).sum())
    finally:
        model.train(was_training)
    return total / max(1, count)
