"""The first pass of a chain with a ``repeated_lines`` step: how many documents hold each distinct line (by hash),
counted per task (:class:`LineCounter`) and merged across tasks (:func:`merge_counts`)."""

from __future__ import annotations

import numpy as np

from kamado.config import ConfigError
from kamado.corpus.config import ChainConfig
from kamado.corpus.io.documents import Document
from kamado.corpus.steps.base import Env
from kamado.corpus.steps.chain import Pipeline, build_steps, repeated_index


class LineCounter:
    """The first pass of a chain with a ``repeated_lines`` step: documents go through the steps before
    it (:meth:`Pipeline.process`); each one that passes adds 1 to the count of every distinct line
    hash it holds. :meth:`frequent` gives the hashes held by more than the step's ``max_docs``
    documents, which the second pass drops.

    Counts are exact and compact: the hashes of passing documents are buffered as raw uint64 (8 B each) and
    folded now and then (``np.unique`` + a sorted merge) into sorted arrays of distinct hashes (uint64) and
    counts (uint32): 12 B per distinct line, ~20 B while a fold runs, instead of ~100 B in a Python dict. A
    task reads at most one byte range (``split_bytes``) of a big JSONL file, so its table stays bounded by
    that, not by the file."""

    FOLD_MIN = 1 << 20  # buffered hashes before the first fold (8 MB); later folds wait for 1/8 of the table

    def __init__(self, chain: ChainConfig, env: Env) -> None:
        k = repeated_index(chain)
        if k is None:
            raise ConfigError(f"chain {chain.name} has no repeated_lines step")
        steps = build_steps(chain, env, upto=k + 1)
        self.prefix = Pipeline(chain, env, steps=steps[:k])
        self.step = steps[k]
        self.max_docs = int(getattr(self.step.p, "max_docs", 10))
        self.reset()

    def reset(self) -> None:
        """Forget every count (a new task)."""
        import array

        self.keys = np.zeros(0, dtype=np.uint64)
        self.vals = np.zeros(0, dtype=np.uint32)
        self._buf = array.array("Q")

    def add(self, doc: Document) -> None:
        doc, by, _ = self.prefix.process(doc)
        if by is None:
            self._buf.extend(self.step.doc_hashes(doc.text))  # type: ignore[attr-defined]
            if len(self._buf) >= max(self.FOLD_MIN, self.keys.size >> 3):
                self._fold()

    def _fold(self) -> None:
        import array

        if not len(self._buf):
            return
        k, c = np.unique(np.frombuffer(self._buf, dtype=np.uint64), return_counts=True)
        self._buf = array.array("Q")
        self.keys, self.vals = merge_counts(self.keys, self.vals, k, c.astype(np.uint32))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The counted hashes (uint64, sorted) and how many documents hold each (int64)."""
        self._fold()
        return self.keys, self.vals.astype(np.int64)

    def frequent(self) -> np.ndarray:
        """Sorted hashes held by more than ``max_docs`` documents (what ``repeated_lines`` drops)."""
        self._fold()
        return self.keys[self.vals > self.max_docs]


def merge_counts(keys: np.ndarray, vals: np.ndarray, new_keys: np.ndarray,
                 new_vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Add counts ``new_vals`` of the sorted distinct hashes ``new_keys`` into the sorted table ``keys``/``vals``
    (``vals`` updated in place where a hash is already there); returns the table, still sorted."""
    if not keys.size:
        return new_keys.astype(np.uint64, copy=True), new_vals.astype(vals.dtype, copy=True)
    if not new_keys.size:
        return keys, vals
    idx = np.searchsorted(keys, new_keys)
    hit = idx < keys.size
    hit[hit] = keys[idx[hit]] == new_keys[hit]
    vals[idx[hit]] += new_vals[hit].astype(vals.dtype)
    new = ~hit
    if new.any():
        at = idx[new]
        keys = np.insert(keys, at, new_keys[new])
        vals = np.insert(vals, at, new_vals[new].astype(vals.dtype))
    return keys, vals
