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

    @property
    def tokenizer(self) -> dict[str, Any]:
        """The tokenizer the pack was made with: ``{"vocab_size", "digests": {file name: sha256}}`` (empty for
        packs written before kamado recorded it)."""
        t = self.meta.get("tokenizer")
        return t if isinstance(t, dict) else {}

    def check_tokenizer(self, tok_dir: Path | str) -> None:
        """Refuse a tokenizer other than the one the pack was made with (:func:`check_pack_tokenizer`)."""
        check_pack_tokenizer(self.path, self.meta, tok_dir)

    def file(self, source: str, split: str = "train") -> Path:
        """The token file of one source and split."""
        if source not in self.sources:
            raise KamadoError(f"{self.path}: no source {source!r} in {PACK} (sources: {', '.join(self.sources)})")
        rel = getattr(self.sources[source], split) or f"{source}/{split}.bin"
        return self.path / rel


TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def tokenizer_digests(tok_dir: Path | str) -> dict[str, str]:
    """SHA-256 of the tokenizer folder's ``tokenizer.model`` and ``tokenizer.json`` (those present)."""
    from kamado.manifest import sha256_file

    return {n: sha256_file(Path(tok_dir) / n) for n in TOKENIZER_FILES if (Path(tok_dir) / n).is_file()}


def check_pack_tokenizer(pack_dir: Path | str, doc: dict[str, Any], tok_dir: Path | str) -> None:
    """A :class:`KamadoError` when ``tok_dir`` is not the tokenizer the pack (``pack.json`` as ``doc``) was made
    with: the recorded digest of ``tokenizer.model`` (else ``tokenizer.json``) differs, or, for a pack that
    recorded no digest, the vocabulary size differs. Its token ids would mean other pieces."""
    rec = doc.get("tokenizer") if isinstance(doc.get("tokenizer"), dict) else {}
    have = tokenizer_digests(tok_dir)
    want = rec.get("digests") if isinstance(rec.get("digests"), dict) else {}
    name = next((n for n in TOKENIZER_FILES if n in want and n in have), None)
    if name is not None:
        if want[name] == have[name]:
            return
        why = f"its {name} has SHA-256 {have[name][:12]}…, the pack's {want[name][:12]}…"
    else:
        from kamado.data.pack import tokenizer_info

        packed = int(rec.get("vocab_size") or doc.get("vocab_size") or 0)
        vocab = int(tokenizer_info(Path(tok_dir))["vocab_size"])
        if not packed or packed == vocab:
            return
        why = f"its vocabulary has {vocab:,} pieces, the pack's {packed:,}"
    raise KamadoError(f"{pack_dir} was packed with another tokenizer than {tok_dir} ({why}): its token ids would "
                      "mean other pieces. Re-pack the data with this tokenizer (`kamado data pack ... --tokenizer "
                      f"{tok_dir}`, or `kamado run RECIPE --force data`), or train with the pack's tokenizer")
