"""A filter chain over documents, with full accounting per step, and the per-shard job both executors run.

Each input shard ``i`` is processed by one worker into ``kept/part-IIIII-*.jsonl.gz``,
``rejected/part-IIIII-*.jsonl.gz`` and ``.work/errors-IIIII.jsonl``; a ``.work/done-IIIII.json``
marker with the shard's counts is written last. Output therefore depends only on the shard, the chain
and the corpus-wide repeated-line table, never on the executor or the number of workers.
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

from kamado.config import ConfigError, format_validation_error
from kamado.corpus.config import ChainConfig
from kamado.corpus.io import Document, ReadError, ShardWriter, dumps, read_shard
from kamado.corpus.steps import Analysis, Cleaner, Env, Filter, Step, step_class


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
    """Run documents through a chain, keeping per-step statistics."""

    def __init__(self, chain: ChainConfig, env: Env) -> None:
        self.chain = chain
        self.steps = build_steps(chain, env)
        self.stats = [StepStats(s.name, getattr(s, "type_name", s.kind), s.kind) for s in self.steps]
        self.store = chain.store_measures

    def process(self, doc: Document) -> tuple[Document, str | None, str | None]:
        """Returns ``(doc, rejected_by, reason)``; the doc's text is the cleaned text."""
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
            if "lang" in m and step.kind == "filter" and getattr(step, "type_name", "") == "language":
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


def _pipeline_for(task: dict, upto: int | None = None) -> tuple[ChainConfig, list[Step] | Pipeline]:
    chain = ChainConfig.model_validate(task["chain"])
    key = hashlib.sha1(json.dumps([task["chain"], task.get("data_root"), task.get("base_dir"),
                                   task.get("repeated"), upto], sort_keys=True).encode()).hexdigest()
    if key not in _CACHE:
        env = _env_for(task)
        _CACHE[key] = build_steps(chain, env, upto) if upto is not None else Pipeline(chain, env)
    obj = _CACHE[key]
    if isinstance(obj, Pipeline):  # fresh statistics for every shard
        obj.stats = [StepStats(s.name, getattr(s, "type_name", s.kind), s.kind) for s in obj.steps]
    return chain, obj


def _records(task: dict) -> Any:
    """The shard's records, honouring ``limit`` (input records, errors included)."""
    limit = task.get("limit")
    for i, rec in enumerate(read_shard(Path(task["path"]), task.get("source"),
                                       text_doc_bytes=task.get("text_doc_bytes", 32_000))):
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
    chain = ChainConfig.model_validate(task["chain"])
    k = repeated_index(chain)
    assert k is not None
    _, prefix = _pipeline_for(task, upto=k)
    rep_step = build_steps(chain, Env(task.get("data_root"), task.get("base_dir")), upto=k + 1)[k]
    counts: dict[int, int] = {}
    for rec in _records(task):
        if isinstance(rec, ReadError):
            continue
        text, lang, ok = rec.text, rec.lang, True
        a = None
        for step in prefix:  # type: ignore[union-attr]
            if step.only_lang is not None and lang != step.only_lang:
                continue
            if isinstance(step, Cleaner):
                text = step.clean(text)
                a = None
            else:
                a = a or Analysis(text)
                m = step.measure(a, rec)  # type: ignore[attr-defined]
                if "lang" in m:
                    lang = str(m["lang"])
                if step.decide(m) is not None:  # type: ignore[attr-defined]
                    ok = False
                    break
        if ok:
            for h in rep_step.doc_hashes(text):  # type: ignore[attr-defined]
                counts[h] = counts.get(h, 0) + 1
    keys = np.fromiter(counts.keys(), dtype=np.uint64, count=len(counts))
    vals = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
    path = out / f"lines-{idx:05d}.npy"
    tmp = out / f".lines-{idx:05d}.npy.tmp"
    with open(tmp, "wb") as f:
        np.save(f, np.stack([keys.view(np.int64), vals]) if len(keys) else np.zeros((2, 0), np.int64))
    os.replace(tmp, path)
    return {"index": idx, "path": str(path)}


def clean_shard_task(task: dict) -> dict:
    """Clean one input shard into its own output files; returns (and stores) the shard's counts."""
    out = Path(task["out"])
    idx = task["index"]
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    chain, pipe = _pipeline_for(task)
    assert isinstance(pipe, Pipeline)
    prefix = f"part-{idx:05d}"
    kept = ShardWriter(out / "kept", prefix, task.get("shard_bytes", 256 << 20))
    rej = ShardWriter(out / "rejected", prefix, task.get("shard_bytes", 256 << 20))
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
        "bytes": os.path.getsize(task["path"]), "read_seconds": round(t_read, 4),
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
