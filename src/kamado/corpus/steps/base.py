"""The building blocks of a filter chain: cleaners (rewrite text) and filters (measure, then decide).

Every step has a ``name`` (unique in the chain, used in ``rejected_by`` and ``stats.json``), a
``type`` (the registered class) and typed parameters validated by a pydantic model, so a typo in a
chain YAML names the step and the key. A filter first *measures* (numbers stored in the document's
``meta.measures``), then *decides* from those numbers alone: thresholds can be re-tuned from stored
measurements without recomputing them (see :func:`kamado.corpus.steps.chain.redecide`).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kamado.config import StrictModel
from kamado.corpus.text import ja


class StepParams(StrictModel):
    """Parameters every step accepts."""

    lang: str | None = None  # apply only to documents whose detected language is this one


class Analysis:
    """Lazily computed views of one text, shared by the filters of a chain (reset when text changes)."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def cps(self) -> np.ndarray:
        return ja.codepoints(self.text)

    @cached_property
    def bmp(self) -> np.ndarray:
        """Code points clipped to the BMP (for lookup tables of 65,536 entries)."""
        c = self.cps
        return c if c.size == 0 or int(c.max()) < 0x10000 else np.minimum(c, 0xFFFF)

    @cached_property
    def classes(self) -> np.ndarray:
        return ja.char_classes(self.cps)

    @cached_property
    def counts(self) -> np.ndarray:
        if self.cps.size == 0:
            return np.zeros(ja.N_CLASSES, dtype=np.int64)
        return np.bincount(self.classes, minlength=ja.N_CLASSES)

    @cached_property
    def n_nonspace(self) -> int:
        return int(self.cps.size - self.counts[ja.SPACE])

    @cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @cached_property
    def nonempty_lines(self) -> list[str]:
        """Lines with edge whitespace removed, empty ones dropped (normalized text has none to strip)."""
        return [s for ln in self.lines if (s := ln.strip())]

    @cached_property
    def words(self) -> list[str]:
        return self.text.split()


class Env:
    """What steps need from outside: the data root (for word lists) and the chain file's folder."""

    def __init__(self, data_root: Path | str | None = None, base_dir: Path | str | None = None,
                 repeated: Any = None) -> None:
        self.data_root = Path(data_root) if data_root else None
        self.base_dir = Path(base_dir) if base_dir else None
        self.repeated = repeated  # corpus-wide frequent line hashes (set by the executor)

    def resolve(self, name: str) -> Path:
        from kamado import catalog

        root = self.data_root
        if root is None and (name in catalog.datasets() or name.startswith("data:")):
            root = catalog.data_root()
        return catalog.resolve(name, root, self.base_dir)


def load_list(env: Env, names: list[str], paragraphs: bool = False) -> list[str]:
    """Entries of word/line lists (registry names, ``data:`` paths or files): one per line, deduplicated,
    NFKC-normalized like the text they are matched against; ``#`` comments and blank lines skipped."""
    from kamado.corpus.text.normalize import normalize

    out: dict[str, None] = {}
    for name in names:
        p = env.resolve(name)
        for line in p.read_text(encoding="utf-8").split("\n"):
            s = normalize(line)
            if s and not s.startswith("#"):
                out[s] = None
    return list(out)


class Step:
    """Base of cleaners and filters."""

    kind: ClassVar[str] = "step"
    Params: ClassVar[type[StepParams]] = StepParams

    def __init__(self, name: str, params: StepParams, env: Env) -> None:
        self.name = name
        self.p = params
        self.env = env
        self.only_lang = params.lang


class Cleaner(Step):
    """Rewrites the text (never rejects); the pipeline accounts for the characters it removes."""

    kind: ClassVar[str] = "cleaner"

    def rewrite(self, text: str) -> str:
        raise NotImplementedError


class Filter(Step):
    """Measures numbers about a text, then decides from them alone (``None`` = keep, else a reason).

    A measurement named ``lang`` sets the document's language for the steps after this one.
    """

    kind: ClassVar[str] = "filter"

    def measure(self, a: Analysis, doc: Any) -> dict[str, float | int | str]:
        raise NotImplementedError

    def decide(self, m: dict[str, Any]) -> str | None:
        raise NotImplementedError


REGISTRY: dict[str, type[Step]] = {}  # filled by the step modules (clean, filters, quality, perplexity) on import


def register(type_name: str):
    """Class decorator: make a step available to chain files under ``type_name``.

    This module defines only the base classes and the registry; the step modules import it, never the
    other way round. :func:`kamado.corpus.steps.chain.step_class` imports the step modules and looks types up.
    """

    def deco(cls: type[Step]) -> type[Step]:
        REGISTRY[type_name] = cls
        cls.type_name = type_name  # type: ignore[attr-defined]
        return cls

    return deco


def fmt(x: float) -> str:
    """Compact number for reason strings."""
    return f"{x:.3g}" if isinstance(x, float) else str(x)
