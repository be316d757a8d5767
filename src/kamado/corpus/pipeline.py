"""A filter chain over documents, with full accounting per step, and the per-shard job both executors run.

Each task ``i`` (an input shard, or one byte range of a big uncompressed JSONL file) is processed by one
worker into ``kept/part-IIIII-*.jsonl.gz``, ``rejected/part-IIIII-*.jsonl.gz`` and ``.work/errors-IIIII.jsonl``;
a ``.work/done-IIIII.json`` marker with the task's counts is written last. Output therefore depends only on the
task, the chain and the corpus-wide repeated-line table, never on the executor or the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from kamado.config import ConfigError, KamadoError, format_validation_error
from kamado.corpus.config import ChainConfig
from kamado.corpus.io import ByteRange, Document, ReadError, RowGroupRange, ShardWriter, dumps, read_shard
from kamado.corpus.steps import REGISTRY, Analysis, Cleaner, Env, Filter, Step


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


class StepStats:
    """Counts for one step: documents in/out, rejections per reason, characters removed, time."""

    __slots__ = ("name", "type", "kind", "docs_in", "docs_out", "chars_in", "chars_removed", "seconds", "reasons",
                 "skipped")

    def __init__(self, name: str, type_: str, kind: str) -> None:
        self.name, self.type, self.kind = name, type_, kind
        self.docs_in = self.docs_out = self.chars_in = self.chars_removed = self.skipped = 0
        self.seconds = 0.0
        self.reasons: dict[str, int] = {}

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "kind": self.kind, "docs_in": self.docs_in,
                "docs_out": self.docs_out, "rejected": self.docs_in - self.docs_out,
                "skipped_by_lang": self.skipped, "chars_in": self.chars_in,
                "chars_removed": self.chars_removed, "seconds": round(self.seconds, 4),
                "reasons": dict(sorted(self.reasons.items()))}


def step_class(type_name: str) -> type[Step]:
    """The step class registered under ``type_name`` (built-in steps, then the model-based ones)."""
    import importlib

    from kamado.corpus import clean, filters, rules  # noqa: F401  (register the built-in steps)

    if type_name not in REGISTRY:  # steps defined by the model-based modules register on import
        for mod in ("kamado.corpus.quality", "kamado.corpus.perplexity"):
            try:
                importlib.import_module(mod)
            except ImportError:
                pass
    if type_name not in REGISTRY:
        raise KamadoError(f"unknown step type {type_name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[type_name]


def build_steps(chain: ChainConfig, env: Env, upto: int | None = None) -> list[Step]:
    """Instantiate the chain's steps (validating each one's parameters)."""
    steps: list[Step] = []
    names: set[str] = set()
    for i, raw in enumerate(chain.steps[:upto]):
        spec = dict(raw)
        type_ = spec.pop("type", None)
        if not type_:
            raise ConfigError(f"chain {chain.name}: steps[{i}] has no 'type'")
        name = str(spec.pop("name", type_))
        if name in names:
            raise ConfigError(f"chain {chain.name}: steps[{i}]: duplicate step name {name!r} (give it a 'name')")
        names.add(name)
        cls = step_class(str(type_))
        try:
            params = cls.Params.model_validate(spec)
        except ValidationError as e:
            raise ConfigError(f"chain {chain.name}: invalid step {name!r}\n"
                              + format_validation_error(e, f"steps[{i}]")) from None
        steps.append(cls(name, params, env))
    return steps


def repeated_index(chain: ChainConfig) -> int | None:
    """Position of the corpus-wide ``repeated_lines`` step, if the chain has one."""
    for i, s in enumerate(chain.steps):
        if s.get("type") == "repeated_lines":
            return i
    return None


class Pipeline:
    """Run documents through a chain (or its first ``upto`` steps), keeping per-step statistics.

    :meth:`process` is the one step loop: the clean job, the line-count pass and the benchmarks all
    run documents through it.
    """

    def __init__(self, chain: ChainConfig, env: Env, upto: int | None = None,
                 steps: list[Step] | None = None) -> None:
        self.chain = chain
        self.steps = build_steps(chain, env, upto) if steps is None else steps
        self.store = chain.store_measures
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = [StepStats(s.name, getattr(s, "type_name", s.kind), s.kind) for s in self.steps]

    def process(self, doc: Document) -> tuple[Document, str | None, str | None]:
        """Returns ``(doc, rejected_by, reason)``; the doc's text is the cleaned text.

        A step with a ``lang`` parameter only sees documents of that language (the others pass it,
        counted as ``skipped_by_lang``); a filter measurement named ``lang`` (the language filter's)
        sets the document's language for the steps after it.
        """
        text = doc.text
        a: Analysis | None = None
        measures: dict[str, Any] = {}
        clock = time.perf_counter
        for step, st in zip(self.steps, self.stats, strict=True):
            if step.only_lang is not None and doc.lang != step.only_lang:
                st.skipped += 1
                st.docs_in += 1
                st.docs_out += 1
                continue
            t0 = clock()
            st.docs_in += 1
            n = len(text)
            st.chars_in += n
            if isinstance(step, Cleaner):
                new = step.clean(text)
                if new is not text and new != text:
                    st.chars_removed += n - len(new)
                    text = new
                    a = None
                st.docs_out += 1
                st.seconds += clock() - t0
                continue
            assert isinstance(step, Filter)
            if a is None:
                a = Analysis(text)
            m = step.measure(a, doc)
            if "lang" in m:
                doc.lang = str(m["lang"])
            measures[step.name] = m
            reason = step.decide(m)
            st.seconds += clock() - t0
            if reason is not None:
                st.chars_removed += n
                code = reason_code(reason)
                st.reasons[code] = st.reasons.get(code, 0) + 1
                doc.text = text
                if self.store and measures:
                    doc.meta = {**doc.meta, "measures": measures}
                return doc, step.name, reason
            st.docs_out += 1
        doc.text = text
        if self.store and measures:
            doc.meta = {**doc.meta, "measures": measures}
        return doc, None, None


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


def redecide(record: dict, chain: ChainConfig, env: Env | None = None,
             steps: list[Step] | None = None) -> tuple[str | None, str | None]:
    """Re-run only the *decide* half of a chain's filters on a record's stored measurements.

    Returns ``(rejected_by, reason)`` or ``(None, None)`` when the record passes every filter it has
    measurements for; lets thresholds be re-tuned on an output folder without recomputing anything.
    """
    if steps is None:
        steps = build_steps(chain, env or Env())  # pass ``steps`` when re-deciding many records
    measures = (record.get("meta") or {}).get("measures") or {}
    for step in steps:
        if isinstance(step, Filter) and step.name in measures:
            reason = step.decide(measures[step.name])
            if reason is not None:
                return step.name, reason
    return None, None


# ------------------------------------------------------------------------------------ shard tasks
_CACHE: dict[str, Any] = {}


def _env_for(task: dict) -> Env:
    rep = None
    if task.get("repeated"):
        key = "rep:" + task["repeated"]
        if key not in _CACHE:
            _CACHE.clear()
            _CACHE[key] = np.sort(np.load(task["repeated"]))
        rep = _CACHE[key]
    return Env(task.get("data_root"), task.get("base_dir"), rep)


def _cached(task: dict, cls: type[Pipeline] | type[LineCounter]) -> Any:
    """The task's :class:`Pipeline` or :class:`LineCounter`, built once per worker process."""
    key = cls.__name__ + hashlib.sha1(json.dumps([task["chain"], task.get("data_root"), task.get("base_dir"),
                                                  task.get("repeated")], sort_keys=True).encode()).hexdigest()
    if key not in _CACHE:
        env = _env_for(task)
        _CACHE[key] = cls(ChainConfig.model_validate(task["chain"]), env)
    return _CACHE[key]


def _pipeline_for(task: dict) -> Pipeline:
    """The task's pipeline with fresh statistics (every shard reports its own)."""
    pipe = _cached(task, Pipeline)
    pipe.reset_stats()
    return pipe


def _records(task: dict) -> Any:
    """The task's records (its byte ``range`` of the file, if it has one), honouring ``limit`` (input records,
    errors included)."""
    limit = task.get("limit")
    rng = ByteRange.from_json(task["range"]) if task.get("range") else None
    groups = RowGroupRange.from_json(task["row_groups"]) if task.get("row_groups") else None
    for i, rec in enumerate(read_shard(Path(task["path"]), task.get("source"),
                                       text_doc_bytes=task.get("text_doc_bytes", 32_000),
                                       encoding=task.get("encoding"), byte_range=rng, row_groups=groups)):
        if limit is not None and i >= limit:
            return
        yield rec


def count_lines_task(task: dict) -> dict:
    """First pass for ``repeated_lines``: per-document line hashes after the steps before it.

    Writes ``.work/lines-IIIII.npy`` (unique hashes and how many documents hold each) and returns
    its path.
    """
    out = Path(task["out"]) / ".work"
    idx = task["index"]
    counter = _cached(task, LineCounter)
    counter.reset()
    try:
        for rec in _records(task):
            if not isinstance(rec, ReadError):
                counter.add(rec)
        counter._fold()
        path = out / f"lines-{idx:05d}.npy"
        tmp = out / f".lines-{idx:05d}.npy.tmp"
        with open(tmp, "wb") as f:  # a (2, N) int64 array (sorted hashes, counts), written row by row, in blocks
            n = counter.keys.size
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int64)),
                                                     "fortran_order": False, "shape": (2, n)})
            for row in (counter.keys.view(np.int64), counter.vals):
                for j in range(0, n, 1 << 20):
                    f.write(row[j:j + (1 << 20)].astype(np.int64).tobytes())
        os.replace(tmp, path)
    finally:
        counter.reset()  # the table is not kept in the worker between tasks
    return {"index": idx, "path": str(path)}


def clean_shard_task(task: dict) -> dict:
    """Clean one input shard into its own output files; returns (and stores) the shard's counts."""
    out = Path(task["out"])
    idx = task["index"]
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    pipe = _pipeline_for(task)
    prefix = f"part-{idx:05d}"
    fmt, level = task.get("format", "jsonl.gz"), task.get("level")
    if level is None and fmt == "jsonl.gz":
        level = pipe.chain.gzip_level
    kept = ShardWriter(out / "kept", prefix, task.get("shard_bytes", 256 << 20), compresslevel=level, format=fmt)
    rej = ShardWriter(out / "rejected", prefix, task.get("shard_bytes", 256 << 20), compresslevel=level, format=fmt)
    work = out / ".work"
    err_tmp = work / f".errors-{idx:05d}.jsonl.tmp"
    n_in = n_kept = n_rej = n_err = 0
    chars_in = chars_kept = text_bytes = 0
    t_read = 0.0
    try:
        with open(err_tmp, "w", encoding="utf-8") as errf:
            it = iter(_records(task))
            while True:
                t0 = time.perf_counter()
                rec = next(it, None)
                t_read += time.perf_counter() - t0
                if rec is None:
                    break
                n_in += 1
                if isinstance(rec, ReadError):
                    n_err += 1
                    errf.write(dumps(rec.to_json()) + "\n")
                    continue
                chars_in += len(rec.text)
                text_bytes += len(rec.text.encode("utf-8", "surrogatepass"))
                doc, by, reason = pipe.process(rec)
                if by is None:
                    n_kept += 1
                    chars_kept += len(doc.text)
                    kept.write(doc.to_json())
                else:
                    n_rej += 1
                    rej.write({**doc.to_json(), "rejected_by": by, "reason": reason})
        kept_paths = kept.close()
        rej_paths = rej.close()
    except BaseException:
        kept.abort()
        rej.abort()
        raise
    os.replace(err_tmp, work / f"errors-{idx:05d}.jsonl")
    result = {
        "index": idx, "file": task["path"], "source": task.get("source"), "input": n_in, "kept": n_kept,
        "rejected": n_rej, "errors": n_err, "chars_in": chars_in, "chars_kept": chars_kept, "text_bytes": text_bytes,
        "bytes": (task["range"][1] - task["range"][0]) if task.get("range") else task.get("bytes")
        or os.path.getsize(task["path"]),
        "read_seconds": round(t_read, 4),
        "seconds": round(time.perf_counter() - t_start, 4),
        "cpu_seconds": round(time.process_time() - cpu_start, 4),
        "kept_files": [p.name for p in kept_paths], "rejected_files": [p.name for p in rej_paths],
        "steps": [s.to_json() for s in pipe.stats],
    }
    done = work / f"done-{idx:05d}.json"
    tmp = work / f".done-{idx:05d}.json.tmp"
    tmp.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, done)
    return result
