"""The data stage's artifact folder (a token pack): the one way other stages read it.

Layout (written by :func:`kamado.data.pack.pack`)::

    pack.json                 vocab_size, dtype, eos/bos ids, fingerprint, per-source counts and paths
    <source>/train.bin        flat token ids of the training documents
    <source>/train.idx.npy    start offset of every training document
    <source>/valid.bin, <source>/valid.idx.npy
    manifest.json             counts (:func:`kamado.data.pack.counts_of` of pack.json)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.stage import artifact_dir

PACK = "pack.json"


@dataclass
class PackSource:
    """One source of a pack: its language, document and token counts, and its token files."""

    name: str
    lang: str | None = None
    docs: int = 0
    train_tokens: int = 0
    valid_tokens: int = 0
    train_chars: int = 0
    valid_chars: int = 0
    train: str = ""  # paths relative to the pack folder
    valid: str = ""
    train_idx: str = ""
    valid_idx: str = ""


@dataclass
class PackArtifact:
    """A pack folder: vocabulary, token dtype, special ids and per-source token files."""

    path: Path
    vocab_size: int
    dtype: str
    bos_id: int | None
    eos_id: int | None
    sources: dict[str, PackSource]
    meta: dict[str, Any] = field(default_factory=dict)  # pack.json as written
    manifest_counts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path | str) -> PackArtifact:
        """Read a pack folder's ``pack.json``; a missing folder or file is a clear error naming it."""
        p, counts = artifact_dir(path, "data", (PACK,))
        try:
            doc = json.loads((p / PACK).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KamadoError(f"{p / PACK}: unreadable ({e}); re-pack the data") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("sources"), dict):
            raise KamadoError(f"{p / PACK}: no 'sources' mapping; re-pack the data")
        known = set(PackSource.__dataclass_fields__) - {"name"}
        sources = {n: PackSource(n, **{k: v for k, v in s.items() if k in known})
                   for n, s in doc["sources"].items() if isinstance(s, dict)}
        return cls(p, int(doc.get("vocab_size") or 0), str(doc.get("dtype", "uint16")), doc.get("bos_id"),
                   doc.get("eos_id"), sources, doc, counts)

    @property
    def train_tokens(self) -> int:
        return sum(s.train_tokens for s in self.sources.values())

    @property
    def valid_tokens(self) -> int:
        return sum(s.valid_tokens for s in self.sources.values())

    def file(self, source: str, split: str = "train") -> Path:
        """The token file of one source and split."""
        if source not in self.sources:
            raise KamadoError(f"{self.path}: no source {source!r} in {PACK} (sources: {', '.join(self.sources)})")
        rel = getattr(self.sources[source], split) or f"{source}/{split}.bin"
        return self.path / rel
