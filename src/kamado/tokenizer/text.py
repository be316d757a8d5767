"""Text is text: the one way kamado turns user, training and evaluation text into token ids.

A literal ``<unk>`` in WikiText, or a user who types ``</s>``, must be encoded as the characters it is, not as
a special token no training sequence holds. Only a chat template inserts special tokens: :func:`encode_chat`
renders the conversation, parses special-token strings in the template's own text, and encodes every
message's content as text. ``kamado tune``, ``kamado chat`` and ``kamado serve`` share it, so a model is
served with exactly the ids it was tuned on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_MARK = "\ue000kamado:{}\ue001"  # private-use brackets: a message's content in a marked render
_MARK_RE = re.compile("\ue000kamado:(\\d+)\ue001")

Render = Callable[[list[dict[str, str]], bool], str]


@dataclass
class Encoded:
    """A rendered chat: its text, token ids and (when asked for) each token's character span in ``text``."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]] = field(default_factory=list)


def encode_text(tokenizer: Any, text: str | list[str]) -> Any:
    """Ids of ``text`` with special-token strings encoded as ordinary text (no BOS/EOS added).

    A list of texts gives a list of id lists. (A tokenizer that does not take ``split_special_tokens`` encodes
    the text as it would otherwise.)
    """
    try:
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    except TypeError:
        return tokenizer(text, add_special_tokens=False)["input_ids"]


def _segments(render: Render, messages: Sequence[dict[str, str]], add_generation_prompt: bool,
              real: str) -> list[tuple[str, bool]]:
    """``real`` cut into (piece, is_content) parts: template text between the messages' contents."""
    marked = render([{**m, "content": _MARK.format(i)} for i, m in enumerate(messages)], add_generation_prompt)
    parts = _MARK_RE.split(marked)
    segs = [(p, False) if k % 2 == 0 else (messages[int(p)]["content"], True) for k, p in enumerate(parts)]
    if "".join(s for s, _ in segs) == real:
        return segs
    # a template that changes the content (trim, escape): find each content, in order, in the real render
    segs, pos = [], 0
    for m in messages:
        c = m["content"]
        at = real.find(c, pos) if c else -1
        if at < 0 and c.strip():
            c = c.strip()
            at = real.find(c, pos)
        if at < 0:
            continue
        segs += [(real[pos:at], False), (c, True)]
        pos = at + len(c)
    return [*segs, (real[pos:], False)]


def encode_chat(tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = False,
                render: Render | None = None, offsets: bool = False) -> Encoded:
    """Render ``messages`` with the chat template (or ``render``) and encode it: special-token strings count
    only in the template's own text; message contents are text. When no content holds a special-token
    string this is exactly the rendered string encoded whole; otherwise template text and contents are
    encoded apart (kamado's template puts a newline or a special token at each boundary, so no piece
    would have spanned one)."""
    if render is None:
        def render(m: list[dict[str, str]], g: bool) -> str:
            return tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=g)
    msgs = [dict(m) for m in messages]
    real = render(msgs, add_generation_prompt)
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
    if any(t in m["content"] for m in msgs for t in specials):
        segs = _segments(render, msgs, add_generation_prompt, real)
    else:  # the common case: one call (a dummy-prefix tokenizer would add "▁" at each segment's start)
        segs = [(real, False)]
    ids: list[int] = []
    offs: list[tuple[int, int]] = []
    start = 0
    for piece, is_content in segs:
        if not piece:
            continue
        enc = tokenizer(piece, add_special_tokens=False, split_special_tokens=is_content,
                        return_offsets_mapping=offsets)
        ids += enc["input_ids"]
        if offsets:
            offs += [(start + a, start + b) for a, b in enc["offset_mapping"]]
        start += len(piece)
    return Encoded(real, ids, offs)
