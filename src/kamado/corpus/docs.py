"""Where the tokenizer and the packer read documents from: corpus folders, shards, registry names.

An input is one of
- a corpus stage folder (holds ``sources.json``: ``[{"name", "lang", "kept"}]``, kept paths relative to it),
- a shard file or a folder of shards (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, Parquet, plain text),
- a data-set name from the registry (``aozora``) or ``data:REL`` under the data root,
- ``NAME=PATH``: every document under PATH belongs to source NAME, whatever its ``source`` field says.

Documents keep their own ``source`` field when they have one; otherwise the source is the registry
name, or the file's stem. The language is the document's ``lang``, else the source's, else guessed
from the script (kana/kanji share).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kamado.config import KamadoError

_JA = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")


def guess_lang(text: str) -> str:
    """``ja`` when at least 10% of the first 2,000 characters are kana or kanji, else ``en``."""
    head = text[:2000]
    if not head:
        return "en"
    return "ja" if len(_JA.findall(head)) >= 0.1 * len(head) else "en"


def ja_share(text: str) -> float | None:
    """Share of a text's letters that are kana or kanji (letters: Unicode category L; digits, symbols and
    whitespace do not count); None for a text without letters. 0.0 is an all-English (or other script) text."""
    letters = [c for c in text if unicodedata.category(c).startswith("L")]
    if not letters:
        return None
    return sum(1 for c in letters if _JA.match(c)) / len(letters)


@dataclass
class InputSpec:
    """One resolved input: its shard files, and the source name / language to use for its documents."""

    label: str
    files: list[Path]
    source: str | None = None  # default source name for documents without a ``source`` field
    force_source: bool = False  # NAME=PATH: override the documents' own ``source``
    lang: str | None = None
    errors: list[str] = field(default_factory=list)
    encoding: str | None = None  # of its JSONL/text files (None: UTF-8)
    normal_form: str | None = None  # the corpus chain's character normal form (None: not known)


def resolve_inputs(inputs: list[str], data_root: Path | None = None, encoding: str | None = None) -> list[InputSpec]:
    """Resolve CLI/stage inputs (see module doc) into shard lists; a missing input is a clear error.
    ``encoding`` is that of the shard files given (a corpus folder's own shards are UTF-8)."""
    from kamado import catalog
    from kamado.corpus.io.encoding import check_encoding
    from kamado.corpus.io.readers import list_inputs

    encoding = check_encoding(encoding)

    specs: list[InputSpec] = []
    for raw in inputs:
        raw = str(raw)
        name = None
        if "=" in raw and not Path(raw).exists():
            name, raw = raw.split("=", 1)
        reg = raw in catalog.datasets()
        p = catalog.resolve(raw, data_root)
        if p.is_dir() and (p / "sources.json").is_file():
            specs += corpus_sources(p, only=None if name is None else [name])
            continue
        files = list_inputs([p])
        specs.append(InputSpec(label=raw, files=files, source=name or (raw if reg else None),
                               force_source=name is not None, encoding=encoding))
    if not specs:
        raise KamadoError("no inputs given")
    return specs


def corpus_sources(corpus_dir: Path, only: list[str] | None = None) -> list[InputSpec]:
    """The kept shards of each source of a corpus stage folder (read through :class:`CorpusArtifact`)."""
    from kamado.corpus.artifacts import CorpusArtifact
    from kamado.corpus.io.readers import list_inputs

    art = CorpusArtifact.open(corpus_dir)
    specs = []
    for e in art.sources:
        if only and e.name not in only:
            continue
        kept = art.kept_dir(e.name)
        if not kept.exists():
            raise KamadoError(f"{art.path / 'sources.json'}: source {e.name!r}: kept shards {kept} are missing")
        files = list_inputs([kept]) if kept.is_file() or any(kept.iterdir()) else []
        specs.append(InputSpec(label=f"{art.path.name}:{e.name}", files=files, source=e.name,
                               force_source=True, lang=e.lang, normal_form=e.normal_form))
    return specs


@dataclass
class Doc:
    """The fields of a document the tokenizer and the packer need."""

    text: str
    source: str
    lang: str


def iter_docs(spec: InputSpec, errors: list[str] | None = None,
              unreadable: list[str] | None = None) -> Iterator[Doc]:
    """Documents of one input in file order; unreadable records are skipped (noted in ``errors``); a file
    whose every record is an error is noted in ``unreadable`` (``FILE:LINE: ERROR`` of its first one)."""
    from kamado.corpus.io.documents import ReadError
    from kamado.corpus.io.readers import read_shard, shard_stem

    for f in spec.files:
        default = spec.source or shard_stem(f)
        good = 0
        first = None
        for rec in read_shard(f, source=default, encoding=spec.encoding):
            if isinstance(rec, ReadError):
                if rec.error != "blank line":
                    first = first or f"{rec.file}:{rec.line}: {rec.error}"
                    if errors is not None:
                        errors.append(f"{rec.file}:{rec.line}: {rec.error}")
                continue
            good += 1
            if not rec.text:
                continue
            src = default if spec.force_source else rec.source
            lang = rec.lang or spec.lang or guess_lang(rec.text)
            yield Doc(rec.text, src, lang)
        if not good and first and unreadable is not None:
            unreadable.append(first)
