"""The document model: a :class:`Document` (what every step works on), a :class:`ReadError` (an input line that
cannot become one) and :func:`dumps`, the one JSON line form both are written in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """One document: the unit every cleaner and filter works on."""

    id: str
    text: str
    source: str
    lang: str | None = None
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "text": self.text, "source": self.source, "lang": self.lang, "meta": self.meta}

    @classmethod
    def from_json(cls, obj: dict, default_id: str, default_source: str) -> Document:
        """Build from a record of any shape; fields other than id/text/source/lang/meta go to ``meta``.

        Raises ``ValueError`` when ``text`` is missing or not a string.
        """
        text = obj.get("text")
        if text is None:
            raise ValueError("record has no 'text' field")
        if not isinstance(text, str):
            raise ValueError(f"'text' is {type(text).__name__}, not a string")
        meta = obj.get("meta")
        meta = dict(meta) if isinstance(meta, dict) else ({} if meta is None else {"meta": meta})
        for k, v in obj.items():
            if k not in ("id", "text", "source", "lang", "meta"):
                meta[k] = v
        rid = obj.get("id")
        src = obj.get("source")
        lang = obj.get("lang")
        return cls(id=str(rid) if rid not in (None, "") else default_id,
                   text=text,
                   source=str(src) if isinstance(src, str) and src else default_source,
                   lang=lang if isinstance(lang, str) else None,
                   meta=meta)


@dataclass
class ReadError:
    """An input line that could not become a document."""

    file: str
    line: int
    error: str

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "error": self.error}


def dumps(obj: Any) -> str:
    """One JSON line (UTF-8 kept, no trailing newline)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
