"""Export a SentencePiece model as a Hugging Face tokenizer folder that round-trips exactly.

Route A of ``STACK.md``: ``tokenizer.model`` with ``tokenizer_class: TokenizersBackend`` is converted
by transformers into a ``tokenizers`` pipeline (split on ``\\n``/``\\t``, ``▁`` for spaces, unigram or BPE
model with byte fallback). Two fixes make its ids equal to SentencePiece's:
- the control pieces (``<unk> <s> </s> <pad>``) and the byte pieces (``<0x41>``) keep score 0 in the
  converted unigram vocabulary, so the literal text ``<unk>`` would become one token; they get a score
  no path can prefer (every printable ASCII character is a piece, see ``train.REQUIRED_CHARS``);
- scores were already rounded in ``train.py`` so float32 and float64 Viterbi agree.
The converted pipeline is saved as ``tokenizer.json`` (loads without protobuf or conversion), next to
``tokenizer.model`` (for SentencePiece users), ``tokenizer_config.json`` and ``special_tokens_map.json``.

Encode raw text with :func:`kamado.tokenizer.text.encode_text` (as the packer does) to treat ``</s>`` in it as text.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from kamado.config import KamadoError

CONTROL_SCORE = -1000.0
_BYTE = re.compile(r"^<0x[0-9A-F]{2}>$")

# A plain role-tagged template; the tune stage may replace it with its own.
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ '### システム:\\n' + m['content'] + '\\n\\n' }}"
    "{% elif m['role'] == 'user' %}{{ '### ユーザー:\\n' + m['content'] + '\\n\\n' }}"
    "{% else %}{{ '### アシスタント:\\n' + m['content'] + eos_token + '\\n\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### アシスタント:\\n' }}{% endif %}"
)


def tokenizer_config(model_max_length: int = 1_000_000) -> dict[str, Any]:
    """The ``tokenizer_config.json`` written next to the model."""
    return {
        "tokenizer_class": "TokenizersBackend",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "padding_side": "right",
        "chat_template": DEFAULT_CHAT_TEMPLATE,
    }


def _control_ids(model: bytes) -> list[int]:
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(model)
    kinds = (pb.ModelProto.SentencePiece.CONTROL, pb.ModelProto.SentencePiece.UNKNOWN)
    return [i for i, p in enumerate(m.pieces) if p.type in kinds]


def _charsmap(model: bytes) -> bytes:
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(model)
    return bytes(m.normalizer_spec.precompiled_charsmap)


def export_hf(model: bytes, out: Path, info: dict[str, Any] | None = None) -> Path:
    """Write the HF tokenizer folder for a serialised SentencePiece model into ``out``."""
    from transformers import AutoTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").unlink(missing_ok=True)
    (out / "tokenizer.model").write_bytes(model)
    cfg = tokenizer_config()
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(str(out))  # route A: converts tokenizer.model
    spec = json.loads(tok.backend_tokenizer.to_str())
    mod = spec.get("model", {})
    if mod.get("type") == "Unigram":
        for i in _control_ids(model):
            mod["vocab"][i][1] = CONTROL_SCORE
        for i, (piece, _) in enumerate(mod["vocab"]):
            if _BYTE.match(piece):
                mod["vocab"][i][1] = CONTROL_SCORE
    elif mod.get("type") != "BPE":
        raise KamadoError(f"unexpected converted tokenizer model {mod.get('type')!r}")
    charsmap = _charsmap(model)
    norm = spec.get("normalizer") or {"type": "Sequence", "normalizers": []}
    rest = [n for n in (norm["normalizers"] if norm.get("type") == "Sequence" else [norm])
            if n.get("type") != "Precompiled"]
    if charsmap:  # the model's normal form (kamado.tokenizer.normal), once, before the space → "▁" replacement;
        # ``tokenizers`` maps a grapheme of 6+ UTF-8 bytes (ﾃﾞ) char by char where SentencePiece matches the
        # pair (デ): NFC composes what that leaves apart (NFKC text is NFC-stable, so nothing else changes)
        rest[:0] = [{"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode("ascii")},
                    {"type": "NFC"}]
    spec["normalizer"] = {"type": "Sequence", "normalizers": rest}
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2) + "\n", encoding="utf-8")
    return out


def load(path: str | Path) -> Any:
    """The Hugging Face tokenizer of a kamado tokenizer folder (offline)."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not (p / "tokenizer_config.json").is_file():
        raise KamadoError(f"{p}: not a tokenizer folder (no tokenizer_config.json); "
                          "train one with `kamado tokenizer train`")
    return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
