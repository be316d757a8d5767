"""Config of the corpus stage (owned by the corpus package; composed into the recipe)."""

from __future__ import annotations

from typing import Literal

from kamado.config import StrictModel


class SourceSpec(StrictModel):
    """One named source of documents: registry names, ``data:`` paths or plain paths."""

    name: str
    lang: Literal["ja", "en", "code", "other"] = "ja"
    inputs: list[str]
    max_docs: int | None = None  # read at most this many documents per source (tiny recipes)


class CorpusConfig(StrictModel):
    """Clean (and deduplicate) every source; output one artifact folder per source."""

    sources: list[SourceSpec]
    chain: str = "default"  # a filter-chain recipe: "default", "default-ja", "default-en" or a YAML path
    dedup: bool = True
    executor: Literal["local", "ray"] = "local"
    workers: int = 2
