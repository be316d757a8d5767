"""The chat template: one Jinja string, set on every tokenizer kamado exports.

The format is a plain-text instruction layout that a small Japanese/English model can learn quickly::

    <s>{system}\\n\\n### 指示:\\n{user}\\n\\n### 応答:\\n{assistant}</s>\\n\\n### 指示:\\n...

Assistant turns are wrapped in ``{% generation %}`` so ``apply_chat_template(...,
return_assistant_tokens_mask=True)`` (and TRL's assistant-only loss) know which tokens to train on;
kamado's own loss masking (:mod:`kamado.tune.sft`) finds the same spans from prefix renders.
"""

from __future__ import annotations

from typing import Any

USER_HEADER = "### 指示:\n"
ASSISTANT_HEADER = "### 応答:\n"
TURN_END = "\n\n"

CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{- message['content'] + '\\n\\n' -}}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- '### 指示:\\n' + message['content'] + '\\n\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '### 応答:\\n' -}}"
    "{%- generation -%}{{- message['content'] + eos_token -}}{%- endgeneration -%}"
    "{{- '\\n\\n' -}}"
    "{%- else -%}"
    "{{- raise_exception('unknown role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '### 応答:\\n' -}}{%- endif -%}"
)

ROLES = ("system", "user", "assistant")


def set_chat_template(tokenizer: Any) -> Any:
    """Install kamado's chat template on a Hugging Face tokenizer (and a pad token if it has none)."""
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def render(messages: list[dict[str, str]], bos: str = "<s>", eos: str = "</s>",
           add_generation_prompt: bool = False) -> str:
    """The template rendered in plain Python (for tokenizers without Jinja support and for tests)."""
    parts = [bos]
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "system":
            parts.append(content + TURN_END)
        elif role == "user":
            parts.append(USER_HEADER + content + TURN_END)
        elif role == "assistant":
            parts.append(ASSISTANT_HEADER + content + eos + TURN_END)
        else:
            raise ValueError(f"unknown role: {role}")
    if add_generation_prompt:
        parts.append(ASSISTANT_HEADER)
    return "".join(parts)


def record_to_messages(rec: dict[str, Any]) -> list[dict[str, str]] | None:
    """A chat from an instruction record: ``{messages: [...]}`` or ``{instruction, input, output}``.

    Returns None when the record has neither shape or an empty answer.
    """
    if isinstance(rec.get("messages"), list):
        msgs = [{"role": str(m.get("role")), "content": str(m.get("content") or "")} for m in rec["messages"]]
        if not msgs or any(m["role"] not in ROLES for m in msgs):
            return None
        if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
            return None
        return msgs
    instr = str(rec.get("instruction") or "").strip()
    out = str(rec.get("output") or rec.get("response") or "").strip()
    if not instr or not out:
        return None
    extra = str(rec.get("input") or rec.get("context") or "").strip()
    user = f"{instr}\n\n{extra}" if extra else instr
    msgs = []
    if rec.get("system"):
        msgs.append({"role": "system", "content": str(rec["system"])})
    return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": out}]
