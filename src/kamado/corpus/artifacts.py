"""The corpus stage's artifact folder: how it is written and the one way other stages read it.

Layout::

    <source>/clean/    kept/, rejected/, errors.jsonl, stats.json
    <source>/dedup/    kept/, rejected/, stats.json            (when deduplication is on)
    sources.json       [{"name", "lang", "kept": "<source>/dedup/kept", "normal_form"}, ...]  (paths relative)
    manifest.json      counts: totals and ``<source>.<count>`` per source (:class:`CorpusCounts`)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kamado.config import KamadoError
from kamado.stage import artifact_dir

SOURCES = "sources.json"
_TOTALS = ("input", "kept", "rejected", "errors", "final_docs")


@dataclass
class SourceCounts:
    """What the corpus stage did to one source."""

    input: int = 0
    kept: int = 0  # kept by the filter chain
    rejected: int = 0
    errors: int = 0
    dedup_removed: int = 0
    final_docs: int = 0  # kept after deduplication
    chars_in: int = 0
    chars_kept: int = 0
    mb_in: float = 0.0
    seconds: float = 0.0
    chain: str = ""


@dataclass
class CorpusCounts:
    """The corpus stage's manifest counts: totals over the sources, and each source's own counts."""

    input: int = 0
    kept: int = 0
    rejected: int = 0
    errors: int = 0
    final_docs: int = 0
    sources: dict[str, SourceCounts] = field(default_factory=dict)

    def add(self, name: str, sc: SourceCounts) -> None:
        """Count one more source (its numbers are added to the totals)."""
        self.sources[name] = sc
        for k in _TOTALS:
            setattr(self, k, getattr(self, k) + getattr(sc, k))

    def to_counts(self) -> dict[str, Any]:
        """The flat manifest form: totals, then ``<source>.<count>``."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _TOTALS}
        for name, sc in self.sources.items():
            out |= {f"{name}.{k}": v for k, v in asdict(sc).items()}
        return out

    @classmethod
    def from_counts(cls, counts: dict[str, Any]) -> CorpusCounts:
        """Read the flat manifest form back (missing numbers are 0; unknown keys are ignored)."""
        known = {f.name for f in fields(SourceCounts)}
        per: dict[str, dict[str, Any]] = {}
        for k, v in counts.items():
            name, _, key = k.rpartition(".")
            if name and key in known:
                per.setdefault(name, {})[key] = v
        c = cls(**{k: int(counts.get(k) or 0) for k in _TOTALS if isinstance(counts.get(k, 0), int | float)})
        c.sources = {n: SourceCounts(**d) for n, d in per.items()}
        return c


@dataclass
class CorpusSource:
    """One entry of ``sources.json``: a source's name, language and kept shards (relative path)."""

    name: str
    lang: str | None
    kept: str
    normal_form: str | None = None  # the chain's character normal form (None: written before it was recorded)


@dataclass
class CorpusArtifact:
    """A corpus stage folder: its sources (``sources.json``) and manifest counts."""

    path: Path
    sources: list[CorpusSource]
    counts: CorpusCounts

    @classmethod
    def open(cls, path: Path | str) -> CorpusArtifact:
        """Read a corpus stage folder; a missing folder or source list is a clear error naming it."""
        p, counts = artifact_dir(path, "corpus", (SOURCES,))
        sj = p / SOURCES
        try:
            entries = json.loads(sj.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KamadoError(f"{sj}: cannot read the corpus source list: {e}") from None
        if isinstance(entries, dict):  # tolerate {"sources": [...]}
            entries = entries.get("sources", [])
        if not isinstance(entries, list):
            raise KamadoError(f"{sj}: expected a list of sources")
        sources = []
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or "name" not in e or "kept" not in e:
                raise KamadoError(f"{sj}: entry {i} needs 'name' and 'kept' (got {e!r})")
            sources.append(CorpusSource(str(e["name"]), e.get("lang"), str(e["kept"]), e.get("normal_form")))
        return cls(p, sources, CorpusCounts.from_counts(counts))

    @staticmethod
    def write_sources(path: Path, sources: list[CorpusSource]) -> None:
        """Write ``sources.json`` (the list downstream stages read)."""
        from kamado.manifest import write_json_atomic

        write_json_atomic(Path(path) / SOURCES, [asdict(s) for s in sources])

    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def source(self, name: str) -> CorpusSource:
        for s in self.sources:
            if s.name == name:
                return s
        raise KamadoError(f"{self.path}: no source {name!r} (sources: {', '.join(self.names())})")

    def kept_dir(self, name: str) -> Path:
        """The kept shards of source ``name`` (after deduplication when it ran)."""
        return self.path / self.source(name).kept

    def stats_files(self) -> list[Path]:
        """Every ``stats.json`` of the folder (cleaning and deduplication of each source)."""
        return sorted(q for q in self.path.rglob("stats.json") if len(q.relative_to(self.path).parts) <= 4)
